from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional import kd_loss
from .registry import register_method


@register_method
class KD(Method):
    key = "kd"
    name = "Vanilla KD"
    category = "response"
    paper = Paper("Geoffrey Hinton, Oriol Vinyals, Jeff Dean", "Distilling the Knowledge in a Neural Network",
                  2015, "NeurIPS Deep Learning Workshop", "1503.02531")
    equation = r"\mathcal{L}_{KD} = T^2\,\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(z_s/T)\big)"
    hparams = (HParam("temperature", 4.0, 1.0, 20.0, "softening temperature T"), STANDARDIZE)
    needs = frozenset({"logits"})
    default_weight = 0.9
    default_ce_weight = 0.1
    convention = "batch-mean KL, times T^2 (RepDistiller/mdistiller)"

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"kd": kd_loss(*self.response_logits(s, t), self.hp["temperature"])}
