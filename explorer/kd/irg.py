from __future__ import annotations

import torch.nn.functional as F

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import irg_edge_loss
from .pairing import ctx_pairs
from .registry import register_method


@register_method
class IRG(Method):
    """Instance relationship graph: vertices = per-instance outputs, edges = instance distances.
    Simplified: vertex term on logits (the paper's L_logits), edge terms on the last `stages`
    paired stages plus the embedding; the paper's transformation (inter-layer) term is omitted."""
    key = "irg"
    name = "Instance Relationship Graph"
    category = "relation"
    paper = Paper("Yufan Liu, Jiajiong Cao, Bing Li, Chunfeng Yuan, Weiming Hu, Yangxi Li, Yunqiang Duan",
                  "Knowledge Distillation via Instance Relationship Graph", 2019, "CVPR", "")
    equation = (r"\mathcal{L}_{IRG} = \lambda_V\,\mathrm{MSE}(z^s, z^t) + \lambda_E\sum_{l}"
                r"\mathrm{MSE}\big(\tfrac{D^s_l}{\bar D^s_l}, \tfrac{D^t_l}{\bar D^t_l}\big),\ D_{l,ij} = \|f_{l,i} - f_{l,j}\|_2")
    hparams = (
        HParam("vertex_weight", 1.0, 0.0, 10.0, "lambda_V on the logit vertices"),
        HParam("edge_weight", 1.0, 0.0, 100.0, "lambda_E on each edge (distance-matrix) term"),
        HParam("stages", 2, 0, 4, "how many of the deepest stage pairs contribute edges"),
    )
    needs = frozenset({"logits", "stages", "embedding"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("own simplification (IRG is not in the CRD benchmark): element-mean MSE; distance matrices "
                  "normalised by their mean off-diagonal distance, as in RKD, so widths can differ")
    notes = "No transformation (IRG-t) term. Edge terms compare per-instance flattened stage maps."

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        k = self.hp["stages"]
        self.pairs = ctx_pairs(ctx)[-k:] if k > 0 else []

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        vertex = F.mse_loss(s.logits, t.logits.detach())
        edge = irg_edge_loss(s.embedding, t.embedding.detach())
        for i, j in self.pairs:
            edge = edge + irg_edge_loss(s.stages[i], t.stages[j].detach())
        return {"vertex": self.hp["vertex_weight"] * vertex, "edge": self.hp["edge_weight"] * edge}
