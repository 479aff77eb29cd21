"""Small pieces the schemes share: frozen models, arch lists, soft targets, wrapped eval models."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..models import list_models
from ..models.registry import MODELS, get_model_spec


def parse_archs(scheme: str, hparam: str, value: str) -> list[str]:
    """'cnn_small, resnet8' -> ['cnn_small', 'resnet8'], every name checked against the zoo (timm: names too)."""
    archs = [a.strip() for a in value.split(",") if a.strip()]
    for a in archs:
        if a not in MODELS:
            raise ValueError(f"scheme {scheme!r}: {hparam} names {a!r}, which is not in the model zoo; "
                             f"choose from: {', '.join(list_models())} (or a timm:NAME)")
    return archs


def check_choice(scheme: str, hparam: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"scheme {scheme!r}: {hparam} must be one of {', '.join(choices)}, got {value!r}")
    return value


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher (or a finished assistant) is read, never trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    return model


class KeepsFrozen:
    """Mixin for a Scheme holding frozen models in `self.frozen` (a list of attribute names):
    scheme.train() must not put them back in train mode, or their BatchNorm statistics would drift."""
    frozen: tuple[str, ...] = ()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            m = getattr(self, name, None)
            if m is not None:
                m.eval()
        return self


def soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a soft target distribution, batch mean."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def params_count(arch: str, num_classes: int, in_channels: int, image_size: int) -> int:
    from ..models import create_model
    return sum(p.numel() for p in create_model(arch, num_classes, in_channels, image_size).parameters())


def mid_model(teacher: str, student: str, num_classes: int, in_channels: int, image_size: int) -> str:
    """The zoo model (same families as the pair) whose size is closest, on a log scale, to the
    geometric mean of the teacher's and the student's -- strictly between the two."""
    size = lambda a: params_count(a, num_classes, in_channels, image_size)  # noqa: E731
    p_t, p_s = size(teacher), size(student)
    lo, hi = sorted((p_t, p_s))
    families = {get_model_spec(teacher).family, get_model_spec(student).family}
    target = math.sqrt(lo * hi)
    best = None
    for arch in list_models():
        if arch in (teacher, student) or get_model_spec(arch).family not in families:
            continue
        p = size(arch)
        if lo < p < hi and (best is None or abs(math.log(p / target)) < best[0]):
            best = (abs(math.log(p / target)), arch)
    if best is None:
        raise ValueError(f"no zoo model of the {'/'.join(sorted(families))} families lies in size between the "
                         f"teacher {teacher} ({p_t:,} params) and the student {student} ({p_s:,}); "
                         "name one with --param takd.assistant=ARCH")
    return best[1]
