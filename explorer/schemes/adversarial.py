"""Adversarial KD: a discriminator on logits tells the teacher's from the student's; the student
learns the config's knowledge terms (KD by default) plus fooling the discriminator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..kd.base import Batch, HParam, Paper
from .base import RunContext, register_scheme
from .offline import Offline


class Discriminator(nn.Module):
    """A small MLP on (B, classes) logits -> one "is the teacher" logit per sample."""

    def __init__(self, num_classes: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_classes, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, logits):
        return self.net(logits).squeeze(1)


@register_scheme
class Adversarial(Offline):
    """The trainer sums all returned terms into one loss and takes one optimiser step over every
    trainable parameter, so the two players' gradients are separated by construction:

    * "disc" (the discriminator's BCE: teacher logits -> 1, student logits -> 0) is computed on
      *detached* student logits (and teacher logits, which carry no gradient anyway), so it
      reaches only the discriminator;
    * "adv" (the student's non-saturating fooling loss, BCE(D(z_s), 1)) is computed through a
      functional call of the discriminator with *detached copies of its parameters*, so its
      gradient flows into the student's logits but leaves the discriminator untouched.

    Both players therefore update in the same step, each on its own objective (simultaneous
    gradient descent), with the run's optimiser and learning rate."""
    key = "adversarial"
    name = "Adversarial KD"
    category = "algorithm"
    paper = Paper("Zheng Xu, Yen-Chang Hsu, Jiawei Huang",
                  "Training Shallow and Thin Networks for Acceleration via Knowledge Distillation with Conditional "
                  "Adversarial Networks", 2018, "ICLR Workshop", "1709.00513")
    equation = (r"\mathcal{L}_D = -\log D(z_t) - \log(1 - D(\bar z_s)),\quad "
                r"\mathcal{L}_S = w_{CE}\,\mathrm{CE}(z_s, y) + "
                r"\sum_m w_m \mathcal{L}_m - \lambda \log D(z_s)")
    hparams = (
        HParam("adv_weight", 0.1, 0.0, 100.0, "weight lambda of the student's fool-the-discriminator term"),
        HParam("d_weight", 1.0, 0.0, 100.0, "weight of the discriminator's loss"),
        HParam("hidden", 64, 4, 4096, "hidden width of the discriminator MLP"),
    )
    needs_teacher = True
    uses_methods = True
    notes = ("Discriminator on logits (Xu et al. 2018; Wang et al. 2018 KDGAN is the same game with a classifier "
             "as generator). Its loss is logged as 'disc'; the student's adversarial term as 'adv'.")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.disc = Discriminator(ctx.dataset.num_classes, self.hp["hidden"]).to(ctx.device)

    def adversarial_terms(self, z_s: torch.Tensor, z_t: torch.Tensor) -> dict[str, torch.Tensor]:
        d_t, d_s = self.disc(z_t.detach().float()), self.disc(z_s.detach().float())
        disc = (F.binary_cross_entropy_with_logits(d_t, torch.ones_like(d_t))
                + F.binary_cross_entropy_with_logits(d_s, torch.zeros_like(d_s)))
        frozen = {n: p.detach() for n, p in self.disc.named_parameters()}
        d_fool = functional_call(self.disc, frozen, (z_s.float(),))
        adv = F.binary_cross_entropy_with_logits(d_fool, torch.ones_like(d_fool))
        return {"disc": self.hp["d_weight"] * disc, "adv": self.hp["adv_weight"] * adv}

    def teacher_outputs(self, batch: Batch):
        t = super().teacher_outputs(batch)
        self._t_logits = t.logits          # kept for the discriminator: one teacher pass per step
        return t

    def train_step(self, batch: Batch):
        self._t_logits = None
        z_s, losses = super().train_step(batch)     # CE + the config's knowledge terms, as offline KD
        z_t = self._t_logits
        if z_t is None:                             # no knowledge terms: offline KD never ran the teacher
            with torch.no_grad():
                z_t = self.teacher(batch.x)
        return z_s, losses | self.adversarial_terms(z_s, z_t)
