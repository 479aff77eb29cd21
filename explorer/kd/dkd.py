from __future__ import annotations

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional import dkd_loss
from .registry import register_method


@register_method
class DKD(Method):
    """Decoupled KD. The reference warms the loss up linearly over the first 20 of 240 epochs;
    we use the run's progress instead of epochs, so a 10-epoch run also warms up over 1/12 of it."""
    key = "dkd"
    name = "Decoupled KD"
    category = "response"
    paper = Paper("Borui Zhao, Quan Cui, Renjie Song, Yiyu Qiu, Jiajun Liang", "Decoupled Knowledge Distillation",
                  2022, "CVPR", "2203.08679")
    equation = (r"\mathcal{L}_{DKD} = \min\!\big(\tfrac{p}{p_w}, 1\big)\,T^2\big(\alpha\,\mathrm{KL}(b^t\|b^s)"
                r" + \beta\,\mathrm{KL}(\hat p^t\|\hat p^s)\big)")
    hparams = (
        HParam("alpha", 1.0, 0.0, 4.0, "weight of TCKD (target vs non-target binary KL)"),
        HParam("beta", 8.0, 0.0, 16.0, "weight of NCKD (KL among non-target classes); paper uses 8 on CIFAR-100"),
        HParam("temperature", 4.0, 1.0, 10.0, "softening temperature T"),
        HParam("warmup", 20 / 240, 0.0, 0.5, "fraction of the run over which the loss ramps linearly from 0 to 1"),
        STANDARDIZE,
    )
    needs = frozenset({"logits"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = "mdistiller: both parts batch-mean (sum / B) times T^2; warm-up min(progress/warmup, 1)"
    notes = ("Warm-up follows batch.progress (20/240 of the run by default), so the loss is 0 on the very "
             "first step. NCKD is computed over the non-target classes exactly (no -1000 logit mask).")

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        w = self.hp["warmup"]
        ramp = min(batch.progress / w, 1.0) if w > 0 else 1.0
        loss = dkd_loss(*self.response_logits(s, t), batch.y, self.hp["alpha"], self.hp["beta"],
                        self.hp["temperature"])
        return {"dkd": ramp * loss}
