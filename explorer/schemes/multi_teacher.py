"""Multi-teacher KD: several frozen teachers (architectures may differ), one student.

Teachers come from `ctx.load_teacher(arch)`: a teacher run of that architecture with the
dataset's recipe is reused if the store has one, else trained once. The config's teacher is
loaded by the trainer as usual (it is the run's `teacher_acc` and the probes' teacher); it is
also used as the first ensemble member when `teachers` names it (as "auto" does). Every
teacher's accuracy is stored: they are in eval_models() as teacher_<arch>. On text (gpt_* models) the logits
are one row per token (models/sequence.py), so the averages and CA-MKD's confidence weights are per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kd.base import Batch, HParam, Paper
from ..models import list_models
from ..models.registry import get_model_spec
from ..models.sequence import build_args
from .base import RunContext, Scheme, register_scheme
from .common import KeepsFrozen, freeze, params_count, parse_archs

_HPARAMS = (
    HParam("teachers", "auto", None, None, "comma-separated teacher architectures (may differ); auto = the "
                                           "config's teacher and the next smaller model of its family"),
    HParam("temperature", 4.0, 1.0, 20.0, "softening temperature T"),
    HParam("kd_weight", 0.9, 0.0, 100.0,
           "weight of the distillation term (CE weight: the config's ce_weight, else 0.1)"),
)


def auto_teachers(ctx: RunContext) -> list[str]:
    """The config's teacher plus the next smaller zoo model of its family (else the next larger)."""
    t = ctx.config.teacher
    size = lambda a: params_count(a, **build_args(ctx.dataset.shape, ctx.dataset.num_classes))  # noqa: E731
    family = [a for a in list_models() if get_model_spec(a).family == get_model_spec(t).family]
    ranked = sorted(family, key=size)
    i = ranked.index(t)
    if len(ranked) < 2:
        raise ValueError(f"{t}'s family has no other model; name the teachers with --param "
                         "<scheme>.teachers=ARCH1,ARCH2")
    return [t, ranked[i - 1] if i > 0 else ranked[i + 1]]


class _MultiTeacher(KeepsFrozen, Scheme):
    needs_teacher = True
    hparams = _HPARAMS
    frozen = ("teachers",)

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        archs = auto_teachers(ctx) if self.hp["teachers"] == "auto" else parse_archs(self.key, "teachers",
                                                                                     self.hp["teachers"])
        if len(archs) < 2 or len(set(archs)) != len(archs):
            raise ValueError(f"scheme {self.key!r}: teachers must name at least two different architectures, "
                             f"got {archs}")
        self.teacher_archs = archs
        self.student = ctx.student
        self.teachers = nn.ModuleList(
            freeze(ctx.teacher if a == ctx.config.teacher and ctx.teacher is not None else ctx.load_teacher(a))
            for a in archs)
        self.ce_weight = 0.1 if ctx.config.ce_weight is None else ctx.config.ce_weight

    def train_step(self, batch: Batch):
        with torch.no_grad():
            t = torch.stack([m(batch.x) for m in self.teachers])      # (K, B, C)
        z = self.student(batch.x)
        if self.training:
            self._record_weights(self.teacher_weights(t.float(), batch.y))
        return z, {"ce": self.ce_weight * F.cross_entropy(z, batch.y),
                   "mtkd": self.hp["kd_weight"] * self.distill(z, t.float(), batch.y)}

    def distill(self, z, t, y) -> torch.Tensor:
        raise NotImplementedError

    def teacher_weights(self, t, y) -> torch.Tensor:
        """(K, B): per-sample weights over teachers, summing to 1 over k (here: equal)."""
        return torch.full(t.shape[:2], 1.0 / len(t), device=t.device)

    def _record_weights(self, w: torch.Tensor) -> None:
        """Sum each teacher's weight over the epoch's samples (no device sync) for epoch_metrics."""
        w = w.detach().float().sum(1)
        self._w_sum = w if getattr(self, "_w_sum", None) is None else self._w_sum + w

    def epoch_metrics(self) -> dict[str, float]:
        """Each teacher's mean weight over the epoch's training samples: teacher_weight/<arch>."""
        w, self._w_sum = getattr(self, "_w_sum", None), None
        if w is None:
            return {}
        w = (w / w.sum()).tolist()
        return {f"teacher_weight/{a}": float(v) for a, v in zip(self.teacher_archs, w)}

    def eval_models(self):
        return {"student": self.student} | {f"teacher_{a}": m for a, m in zip(self.teacher_archs, self.teachers)}


@register_scheme
class MTKDAvg(_MultiTeacher):
    """KD towards the average of the teachers' softened distributions (equal weights)."""
    key = "mtkd_avg"
    name = "Multi-teacher KD (average)"
    category = "algorithm"
    paper = Paper("Shan You, Chang Xu, Chao Xu, Dacheng Tao", "Learning from Multiple Teacher Networks", 2017,
                  "KDD", "")
    equation = (r"\bar p = \frac{1}{K}\sum_k \sigma(z_{t_k}/T),\quad \mathcal{L} = w_{CE}\,\mathrm{CE}(z_s, y) + "
                r"w\,T^2\,\mathrm{KL}\big(\bar p\,\|\,\sigma(z_s/T)\big)")
    notes = "Averaged softened outputs only (You et al. also match intermediate relative dissimilarities: omitted)."

    def distill(self, z, t, y):
        T = self.hp["temperature"]
        p_bar = F.softmax(t / T, dim=2).mean(0)
        return F.kl_div(F.log_softmax(z / T, 1), p_bar, reduction="batchmean") * T ** 2


@register_scheme
class CAMKD(_MultiTeacher):
    """Confidence-aware multi-teacher KD: per sample, teacher k's weight is (1 - softmax_k(CE_k)) / (K - 1)
    (the paper's Eq. 2), so the teachers that are right (low CE on the true label) count more and the
    weights sum to 1; the loss is the weighted sum of the per-teacher KL terms, summed over the batch and
    divided by B x K, as the authors' code (Rorozhl/CA-MKD, helper/loops.py `train_distill`, ensemble_method
    CAMKD: `loss_div = (attention * loss_div).sum() / (bsz * teacher_num)`). form "paper" leaves out the 1/K
    (the batch mean of Eq. 3, K times larger; earlier versions). CA-MKD's intermediate-feature term is not
    included."""
    key = "camkd"
    name = "Confidence-Aware Multi-teacher KD"
    category = "algorithm"
    paper = Paper("Hailin Zhang, Defang Chen, Can Wang",
                  "Confidence-Aware Multi-Teacher Knowledge Distillation", 2022, "ICASSP", "2201.00007")
    equation = (r"w_{k}(x) = \frac{1 - \mathrm{softmax}_k\big(\mathrm{CE}(z_{t_k}(x), y)\big)}{K-1},\quad \mathcal{L} = "
                r"w_{CE}\,\mathrm{CE}(z_s, y) + "
                r"\tfrac{w}{K}\,T^2 \sum_k w_k\,\mathrm{KL}\big(\sigma(z_{t_k}/T)\,\|\,\sigma(z_s/T)\big)\ "
                r"(\text{batch mean; paper form without } \tfrac1K)")
    hparams = _HPARAMS + (
        HParam("form", "official", help="official: divide by the number of teachers K, as the authors' code | "
                                        "paper: Eq. 3's weighted sum without 1/K", choices=("official", "paper")),
    )
    notes = ("Paper and code differ by a factor K: the official loss divides the confidence-weighted KL sum by the "
             "number of teachers as well as the batch (default); form=paper does not. The official script weights "
             "CE 1 and KD 1 (-r 1 -a 1); ours defaults to the shared 0.1 / 0.9.")

    def teacher_weights(self, t, y) -> torch.Tensor:
        """(K, B): per-sample weights over teachers, summing to 1 over k."""
        ce = torch.stack([F.cross_entropy(tk, y, reduction="none") for tk in t])
        return (1 - F.softmax(ce, dim=0)) / (len(t) - 1)   # at least two teachers (checked in __init__)

    def distill(self, z, t, y):
        T = self.hp["temperature"]
        w = self.teacher_weights(t, y)
        log_q = F.log_softmax(z / T, 1)
        log_p = F.log_softmax(t / T, 2)                                  # (K, B, C)
        kl = (log_p.exp() * (log_p - log_q.unsqueeze(0))).sum(2)         # (K, B)
        k = len(t) if self.hp["form"] == "official" else 1
        return (w * kl).sum(0).mean() * T ** 2 / k
