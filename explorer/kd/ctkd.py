from __future__ import annotations

import math

import torch
from torch import nn

from .base import STANDARDIZE, Batch, HParam, Method, Outputs, Paper
from .functional import kd_loss
from .registry import register_method


class _GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by -lambda, so the temperature ascends
    the KD loss (makes the task harder) while the student descends it."""

    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


@register_method
class CTKD(Method):
    """Curriculum Temperature KD, global-temperature variant: one learnable T trained adversarially
    through a gradient-reversal layer whose strength lambda follows a cosine curriculum 0 -> 1.
    Defaults are the official CIFAR recipe (zhengli97/CTKD: models/temp_global.py `Global_T`,
    train_student.py `CosineDecay`, scripts/run_cifar_distill.sh): T = 1 + 20 sigmoid(theta) with theta
    initialised to 1 (T ~= 15.62), and lambda rising over the first 10 of 240 epochs."""
    key = "ctkd"
    name = "Curriculum Temperature KD"
    category = "response"
    paper = Paper("Zheng Li, Xiang Li, Lingfeng Yang, Borui Zhao, Renjie Song, Lei Luo, Jun Li, Jian Yang",
                  "Curriculum Temperature for Knowledge Distillation", 2023, "AAAI", "2211.16231")
    equation = (r"T = T_{min} + (T_{max}-T_{min})\,\mathrm{sigmoid}(\theta),\ "
                r"\mathcal{L} = T^2\,\mathrm{KL}(\sigma(z_t/T)\|\sigma(z_s/T)),\ "
                r"\nabla_\theta \leftarrow -\lambda\nabla_\theta,\ \lambda = \tfrac12\big(1-\cos(\pi\min(p/c, 1))\big),"
                r"\ c = \tfrac{10}{240}")
    hparams = (
        HParam("t_min", 1.0, 0.5, 4.0, "lower clamp of the learned temperature"),
        HParam("t_max", 21.0, 4.0, 40.0, "upper clamp of the learned temperature (paper: 1 + range 20)"),
        HParam("t_init", 1.0 + 20.0 / (1.0 + math.exp(-1.0)), 1.0, 20.0,
               "initial temperature; default 1 + 20 sigmoid(1) ~= 15.62, the official theta_0 = 1"),
        HParam("curriculum", 10 / 240, 0.0, 1.0, "fraction of the run over which lambda rises from 0 to 1 "
                                                 "(official: 10 of 240 epochs; 0 = lambda 1 from the start)"),
        STANDARDIZE,
    )
    needs = frozenset({"logits"})
    default_weight = 0.9
    default_ce_weight = 0.1
    convention = ("official CTKD global-T recipe: KD part as vanilla KD (batch-mean KL x T^2, distiller_zoo/KD.py), "
                  "T = t_min + (t_max - t_min) sigmoid(theta) (official: 1 + 20 sigmoid(theta), theta_0 = 1), lambda "
                  "a cosine 0 -> 1 over 10/240 of the run; CE 0.1 / KD 0.9 as the official script. The official "
                  "lambda steps once per epoch (epoch e of 10: (1 - cos(pi e/10))/2); ours follows the run's "
                  "progress continuously, at most one epoch's step apart")
    notes = ("Learned T is a parameter of the method, optimised with the student (weight decay on it, if "
             "the optimiser applies any, pulls theta to 0, i.e. T to the middle of the range). "
             "Temperature is bounded by a sigmoid between t_min and t_max.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        lo, hi, t0 = self.hp["t_min"], self.hp["t_max"], self.hp["t_init"]
        if not lo < t0 < hi:
            raise ValueError(f"ctkd: need t_min < t_init < t_max, got {lo}, {t0}, {hi}")
        frac = (t0 - lo) / (hi - lo)
        self.theta = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))))   # sigmoid(theta) = frac

    def lam(self, progress: float) -> float:
        c = self.hp["curriculum"]
        x = min(max(progress / c, 0.0), 1.0) if c > 0 else 1.0
        return 0.5 * (1 - math.cos(math.pi * x))

    def temperature(self) -> torch.Tensor:
        lo, hi = self.hp["t_min"], self.hp["t_max"]
        return lo + (hi - lo) * torch.sigmoid(self.theta)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        lo, hi = self.hp["t_min"], self.hp["t_max"]
        theta = _GradReverse.apply(self.theta, self.lam(batch.progress))
        T = lo + (hi - lo) * torch.sigmoid(theta)
        self.last_temperature = T.detach()   # for logging; not a loss term (every term is summed)
        return {"kd": kd_loss(*self.response_logits(s, t), T)}
