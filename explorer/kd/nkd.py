from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional_extra import nkd_losses
from .registry import register_method


@register_method
class NKD(Method):
    """Normalised KD: KD split into the target class's term and a *normalised* non-target term (the
    non-target probabilities renormalised to sum to one), so the non-target knowledge is not scaled down
    by the teacher's target confidence."""
    key = "nkd"
    name = "Normalized KD"
    category = "response"
    paper = Paper("Zhendong Yang, Ailing Zeng, Chun Yuan, Yu Li", "From Knowledge Distillation to Self-Knowledge "
                  "Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", 2023, "ICCV",
                  "2303.13005")
    equation = (r"\mathcal{L}_{NKD} = -\tfrac1B\sum_i t_{i}\log s_{i} - \gamma\,T^2\,\tfrac1B\sum_i\sum_{j\neq y_i}"
                r"\hat q^{t,T}_{ij}\log\hat q^{s,T}_{ij},\ \hat q^{T} = \mathrm{softmax}_{j\neq y}(z_j/T)")
    hparams = (
        HParam("temperature", 3.0, 1.0, 10.0, "temperature T of the non-target part (official CIFAR-100 config 3; "
                                             "ImageNet 1)"),
        HParam("gamma", 3.5, 0.0, 10.0, "weight of the non-target part (official CIFAR-100 config 3.5; ImageNet 1.5)"),
        STANDARDIZE,
    )
    needs = frozenset({"logits"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("official NKD (yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py `NKDLoss`; "
                  "configs/distillers/cifar100/res34_distill_res18_cifar.py: temp 3, gamma 3.5; loss weight 1 beside "
                  "the student's CE): target part at T = 1, batch mean; non-target part batch mean x gamma T^2; "
                  "non-target classes dropped exactly (as the official boolean mask)")
    notes = ("Both parts are cross-entropies, not KL: neither is 0 when the student equals the teacher (the "
             "non-target part is smallest there; the target part keeps pulling the target probability up). "
             "Hard labels only (the official code takes the argmax of soft ones).")

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        terms = nkd_losses(*self.response_logits(s, t), batch.y, self.hp["temperature"], self.hp["gamma"])
        return {f"nkd_{name}": value for name, value in terms.items()}
