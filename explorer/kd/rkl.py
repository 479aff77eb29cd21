from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .divergences import reverse_kl
from .registry import register_method


@register_method
class ReverseKL(Method):
    key = "rkl"
    name = "Reverse KL (MiniLLM, token level)"
    category = "response"
    paper = Paper("Yuxian Gu, Li Dong, Furu Wei, Minlie Huang", "MiniLLM: Knowledge Distillation of Large Language "
                  "Models", 2024, "ICLR", "2306.08543")
    equation = r"\mathcal{L}_{RKL} = \mathrm{KL}\big(\sigma(z_s/T)\,\|\,\sigma(z_t/T)\big)"
    hparams = (HParam("temperature", 1.0, 0.5, 20.0, "softening temperature T (MiniLLM: 1)"), STANDARDIZE)
    needs = frozenset({"logits"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("the token-level reverse KL, mean over positions, no T^2 factor (MiniLLM's single-step term; "
                  "its sequence-level policy-gradient form is not this method)")
    notes = "mode seeking: the student may put its mass on one of the teacher's modes instead of covering them all"

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"rkl": reverse_kl(*self.response_logits(s, t), self.hp["temperature"])}
