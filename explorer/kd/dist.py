from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional import dist_loss
from .registry import register_method


@register_method
class DIST(Method):
    """Match the teacher's prediction *relations* (Pearson correlation) rather than exact
    probabilities, across classes per sample (inter) and across samples per class (intra)."""
    key = "dist"
    name = "DIST"
    category = "response"
    paper = Paper("Tao Huang, Shan You, Fei Wang, Chen Qian, Chang Xu",
                  "Knowledge Distillation from A Stronger Teacher", 2022, "NeurIPS", "2205.10536")
    equation = (r"\mathcal{L}_{DIST} = \tau^2\Big(\beta\,\tfrac1B\sum_i \big(1-\rho(Y^s_{i,:},Y^t_{i,:})\big)"
                r" + \gamma\,\tfrac1K\sum_j \big(1-\rho(Y^s_{:,j},Y^t_{:,j})\big)\Big),\ Y=\sigma(z/\tau)")
    hparams = (
        HParam("beta", 2.0, 0.0, 4.0, "inter-class (per-sample) relation weight"),
        HParam("gamma", 2.0, 0.0, 4.0, "intra-class (per-class, across the batch) relation weight"),
        HParam("temperature", 4.0, 1.0, 8.0, "tau"),
        STANDARDIZE,
    )
    needs = frozenset({"logits"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("official DIST code: Pearson via mean-centred cosine (eps 1e-8), times tau^2; CIFAR-100 "
                  "recipe beta=gamma=2, tau=4 (ImageNet recipe: beta=gamma=1, tau=1)")
    notes = "The intra-class term correlates columns across the batch, so it needs batches of more than one sample."

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"dist": dist_loss(*self.response_logits(s, t), self.hp["beta"], self.hp["gamma"],
                                  self.hp["temperature"])}
