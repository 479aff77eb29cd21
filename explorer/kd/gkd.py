from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .divergences import generalized_jsd
from .registry import register_method


@register_method
class GeneralizedJSD(Method):
    key = "gkd"
    name = "Generalised JSD (GKD)"
    category = "response"
    paper = Paper("Rishabh Agarwal, Nino Vieillard, Yongchao Zhou, Piotr Stanczyk, Sabela Ramos, Matthieu Geist, "
                  "Olivier Bachem", "On-Policy Distillation of Language Models: Learning from Self-Generated "
                  "Mistakes", 2024, "ICLR", "2306.13649")
    equation = (r"\mathcal{L}_{JSD(\beta)} = \beta\,\mathrm{KL}(p_t\,\|\,m) + (1-\beta)\,\mathrm{KL}(p_s\,\|\,m),\quad "
                r"m = \beta p_t + (1-\beta) p_s")
    hparams = (HParam("beta", 0.5, 0.0, 1.0, "weight of the teacher in the mixture: 0 = forward KL, 1 = reverse "
                      "KL (GKD's convention)"),
               HParam("temperature", 1.0, 0.5, 20.0, "softening temperature T (GKD: 1)"), STANDARDIZE)
    needs = frozenset({"logits"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("TRL's GKDTrainer.generalized_jsd_loss: mean over positions, no T^2; beta = 0 and 1 are the "
                  "forward and reverse KL (special-cased: JSD(beta) itself vanishes there); GKD's on-policy "
                  "fraction lambda is a property of where the sequences come from, not of this criterion")

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"gkd": generalized_jsd(*self.response_logits(s, t), self.hp["beta"], self.hp["temperature"])}
