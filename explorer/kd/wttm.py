from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional_extra import wttm_loss
from .registry import register_method


@register_method
class WTTM(Method):
    """Weighted transformed teacher matching: the temperature is dropped on the student's side, so the
    untempered student matches the power-transformed teacher p_t^gamma (KD's teacher at T = 1/gamma), which
    leaves a Renyi-entropy regulariser in the objective; each sample is weighted by U = sum_k p_t,k^gamma,
    larger for smoother teacher outputs."""
    key = "wttm"
    name = "Weighted Transformed Teacher Matching"
    category = "response"
    paper = Paper("Kaixiang Zheng, En-Hui Yang", "Knowledge Distillation Based on Transformed Teacher Matching",
                  2024, "ICLR", "2402.11148")
    equation = (r"U_\gamma(p_t) = \sum_k p_{t,k}^{\gamma},\ \mathcal{L}_{WTTM} = \tfrac1B\sum_i U_\gamma(p_{t,i})\,"
                r"\mathrm{KL}\big(p_{t,i}^{\gamma}/U_\gamma(p_{t,i})\,\|\,\sigma(z_{s,i})\big),\ p_t = \sigma(z_t)")
    hparams = (
        HParam("gamma", 0.2, 0.05, 1.0, "power-transform exponent (1/T on the teacher's side; the official `--ttm_l`); "
                                        "1 = plain KD at T = 1 weighted by U = 1"),
        STANDARDIZE,
    )
    needs = frozenset({"logits"})
    default_weight = 4.0
    default_ce_weight = 1.0
    convention = ("official WTTM (zkxufo/TTM, distiller_zoo/wttm.py `WTTM`): per-sample sum of the KL over classes, "
                  "times U, batch mean; no T^2 factor; CE weight 1 (`-r 1`). Defaults gamma 0.2, weight 4: the WTTM "
                  "setting in the official README's example command (`--add wttm --ttm_l 0.2 -a 4`, WTTM beside "
                  "CRD). The per-pair values of the paper's appendix A.4 were not available to us; the README's TTM "
                  "example uses gamma 0.1 with weight 45 (TTM has no U, which is up to K^(1-gamma) times larger)")
    notes = "The weight U grows with the number of classes (up to K^(1 - gamma)), so the best weight does too."

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"wttm": wttm_loss(*self.response_logits(s, t), self.hp["gamma"])}
