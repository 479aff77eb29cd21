"""DeiT: distillation through attention (Touvron et al., ICML 2021) -- a transformer student with a
distillation token learns the labels through its class token and the frozen teacher (a CNN is best in the
paper) through its distillation token; at test time the two heads are averaged.

Follows facebookresearch/deit's losses.py `DistillationLoss` and main.py's defaults (alpha 0.5, tau 1.0):
    hard: (1 - alpha) CE(z_cls, y) + alpha CE(z_dist, argmax z_t)
    soft: (1 - alpha) CE(z_cls, y) + alpha tau^2 KL(softmax(z_t / tau) || softmax(z_dist / tau)),
          the KL summed and divided by z_dist.numel() = B * K (the code's "legacy PyTorch" mean, their issue 61),
          i.e. 1/K of the batch-mean KL.
Hard is the default: the paper's best published numbers use it. Differences from their ImageNet recipe, kept
out for small bundled data: the label term is plain CE (they use label smoothing 0.1, or soft-target CE
under Mixup/CutMix), no RandAugment, no stochastic depth.

A student must have a distillation head (`kd_distillation_head`, a module whose output is the distillation
token's logits, read through a tap): the zoo's deit_* models (vit_* + `enable_distillation_token()`); any
other student is refused when the config is resolved (`check_config`).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..kd.base import Batch, HParam, Paper
from ..models.taps import tap
from ..speed import TeacherCache
from .base import RunContext, Scheme, register_scheme
from .common import KeepsFrozen

TYPES = ("hard", "soft")


def distillation_head(model: nn.Module) -> str | None:
    """The name of the model's distillation-token head, or None when it has none."""
    spec = getattr(model, "kd_distillation_head", None)
    return spec if spec and spec.partition(":")[0] in dict(model.named_modules()) else None


@lru_cache(maxsize=32)
def _zoo_has_distillation_token(arch: str) -> bool:
    from ..models import create_model
    return distillation_head(create_model(arch)) is not None


def _no_token_message(arch: str) -> str:
    from ..models import list_models
    with_token = [a for a in list_models("vit") if _zoo_has_distillation_token(a)]   # (building the whole zoo: seconds)
    return (f"the deit scheme needs a student with a distillation token and head, and {arch} has none; choose "
            f"one of: {', '.join(with_token)} (a vit_* model with DeiT's distillation token)")


def deit_loss(z_cls: torch.Tensor, z_dist: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, kind: str,
              alpha: float, tau: float) -> dict[str, torch.Tensor]:
    """The two weighted terms of DeiT's DistillationLoss: {"ce": (1-alpha) CE, "distill": alpha L_dist}."""
    if kind == "hard":
        dist = F.cross_entropy(z_dist, z_t.argmax(dim=1))
    else:
        dist = F.kl_div(F.log_softmax(z_dist / tau, dim=1), F.log_softmax(z_t / tau, dim=1), reduction="sum",
                        log_target=True) * (tau * tau) / z_dist.numel()
    return {"ce": (1 - alpha) * F.cross_entropy(z_cls, y), "distill": alpha * dist}


class HeadOnly(nn.Module):
    """Evaluation view of a distilled student through one head (the class token's or the distillation
    token's), for the paper's per-head accuracies; holds no weights of its own (state_dict is empty)."""

    def __init__(self, student: nn.Module, head: str):
        super().__init__()
        self.student, self.head = student, head

    def forward(self, x):
        with tap(self.student, [self.head]) as feats:
            self.student(x)
        return feats[self.head]

    def state_dict(self, *args, **kwargs):
        return OrderedDict()


@register_scheme
class DeiT(KeepsFrozen, Scheme):
    """The teacher is frozen and sees the same (augmented) batch as the student; the student's forward
    in train mode returns the class head's logits, the distillation head's are read through a tap. The
    stored student is the model itself: in eval mode it averages its two heads (what "student" accuracies
    measure); "class_head" and "dist_head" are its accuracies through each head alone (paper, Table 3)."""
    key = "deit"
    name = "DeiT: distillation through attention"
    category = "offline"
    paper = Paper("Hugo Touvron, Matthieu Cord, Matthijs Douze, Francisco Massa, Alexandre Sablayrolles, "
                  "Hervé Jégou", "Training data-efficient image transformers & distillation through attention",
                  2021, "ICML", "2012.12877")
    equation = (r"\mathcal{L} = (1-\alpha)\,\mathrm{CE}(\psi(Z_{cls}), y) + \alpha\,\mathcal{L}_{dist},\quad "
                r"\mathcal{L}_{dist}^{hard} = \mathrm{CE}(\psi(Z_{dist}), \arg\max_c Z_t),\quad "
                r"\mathcal{L}_{dist}^{soft} = \frac{\tau^2}{K}\,\mathrm{KL}\big(\psi(Z_t/\tau)\,\|\,"
                r"\psi(Z_{dist}/\tau)\big)")
    hparams = (
        HParam("distillation_type", "hard", help="hard: CE on the teacher's argmax (the paper's best); soft: "
                                                  "KL to the teacher's softened distribution", choices=TYPES),
        HParam("alpha", 0.5, 0.0, 1.0, "weight of the distillation term; the label term gets 1 - alpha "
                                       "(official default 0.5; the paper's soft runs: 0.1)"),
        HParam("tau", 1.0, 0.1, 20.0, "soft only: temperature (official default 1.0; the paper's soft runs: 3.0)",
               open_low=True),
    )
    needs_teacher = True
    uses_methods = False
    notes = ("Students need a distillation token: the zoo's deit_* models. Hard distillation by default; "
             "at test time the class and distillation heads are averaged.")
    convention = ("facebookresearch/deit losses.py: soft KL summed and divided by B*K (numel), times tau^2; "
                  "label term plain CE (their ImageNet recipe: label smoothing / Mixup soft targets)")
    frozen = ("teacher",)

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student, self.teacher = ctx.student, ctx.teacher
        self.dist_head = distillation_head(self.student)
        if self.dist_head is None:
            raise ValueError(_no_token_message(ctx.config.student))
        self.class_head = getattr(self.student, "kd_classifier", None)
        # config.teacher_cache: the frozen teacher's logits, reused per (sample, augmented view), as offline KD's
        self.teacher_cache = TeacherCache.for_run(ctx) if ctx.config.teacher_cache else None

    @classmethod
    def check_config(cls, config) -> None:
        """At resolve time: the student must be a model with a distillation token (zoo models only;
        a custom model is checked when the run builds it)."""
        from ..custom_code import is_custom
        if config.student and not is_custom(config.student) and not _zoo_has_distillation_token(config.student):
            raise ConfigError("student", _no_token_message(config.student))

    def train_step(self, batch: Batch):
        if self.teacher_cache is not None:
            z_t = self.teacher_cache.logits(self.teacher, batch)
        else:
            with torch.no_grad():
                z_t = self.teacher(batch.x)
        with tap(self.student, [self.dist_head]) as feats:
            z_cls = self.student(batch.x)
        hp = self.hp
        return z_cls, deit_loss(z_cls, feats[self.dist_head], z_t.float(), batch.y, hp["distillation_type"],
                                hp["alpha"], hp["tau"])

    def eval_models(self):
        models = {"student": self.student}
        if self.class_head:
            models["class_head"] = HeadOnly(self.student, self.class_head)
        models["dist_head"] = HeadOnly(self.student, self.dist_head)
        return models
