from __future__ import annotations

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import rkd_loss
from .registry import register_method


@register_method
class RKD(Method):
    """Relational KD: transfer the *geometry* of the batch in embedding space (pairwise distances
    and triplet angles), invariant to the embeddings' scale and dimension."""
    key = "rkd"
    name = "Relational KD"
    category = "relation"
    paper = Paper("Wonpyo Park, Dongju Kim, Yan Lu, Minsu Cho", "Relational Knowledge Distillation", 2019,
                  "CVPR", "1904.05068")
    equation = (r"\mathcal{L}_{RKD} = \lambda_D\,\ell_\delta\!\big(\tfrac{\|s_i-s_j\|}{\mu_s}, \tfrac{\|t_i-t_j\|}{\mu_t}\big)"
                r" + \lambda_A\,\ell_\delta\!\big(\cos\angle s_i s_j s_k, \cos\angle t_i t_j t_k\big)")
    hparams = (
        HParam("distance_weight", 25.0, 0.0, 100.0, "lambda_D"),
        HParam("angle_weight", 50.0, 0.0, 100.0, "lambda_A"),
    )
    needs = frozenset({"embedding"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = "RepDistiller RKDLoss: smooth-L1 (mean) on all B^2 distances / B^3 angles, 25/50 inside"
    notes = "Uses the penultimate embeddings. Angle term costs O(B^3) memory."

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"rkd": rkd_loss(s.embedding, t.embedding.detach(), self.hp["distance_weight"],
                                self.hp["angle_weight"])}
