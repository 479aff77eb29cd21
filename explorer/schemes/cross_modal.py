"""Cross-modal KD: the teacher sees one modality (the dataset's images, e.g. RGB `shapes`), the
student another view of the same sample, computed on the device from the batch -- so every
pair is aligned by construction.

Design of evaluation: the student model itself takes its view (shape-compatible with the
dataset: single-channel views are repeated over the input channels, so the stored student loads
like any zoo model of the dataset); what eval_models() returns as "student" is `ViewModel`, a
wrapper that converts the dataset's images into the student's view before the student. The
trainer's val/test accuracies and probes therefore measure the student on its own modality.
The wrapper's state_dict is the bare student's, so model.pt holds the plain student; to run it
elsewhere, feed it `make_view(name, dataset)(x)`.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..kd.base import Batch, HParam, Paper
from .base import RunContext, register_scheme
from .common import check_choice
from .offline import Offline

VIEWS = ("grayscale", "edges", "lowres")


class View(nn.Module):
    """Normalised dataset images -> the student's view, same shape, roughly standardised."""

    def __init__(self, name: str, scale: torch.Tensor, shift: torch.Tensor, factor: int = 4):
        super().__init__()
        self.name, self.factor = name, factor
        self.register_buffer("scale", scale.clone(), persistent=False)   # x_norm = uint8 * scale + shift
        self.register_buffer("shift", shift.clone(), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()]).unsqueeze(1), persistent=False)

    def luminance(self, x):
        rgb = ((x - self.shift) / (self.scale * 255.0)).clamp(0, 1)        # back to [0, 1]
        if rgb.shape[1] == 3:
            return (rgb * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return rgb.mean(1, keepdim=True)

    def forward(self, x):
        c = x.shape[1]
        if self.name == "lowres":   # average-pool by `factor`, then nearest-upsample back: a blurred, blocky copy
            h, w = x.shape[-2:]
            f = min(self.factor, h, w)
            return F.interpolate(F.avg_pool2d(x, f, ceil_mode=True), size=(h, w), mode="nearest")
        g = self.luminance(x)
        if self.name == "grayscale":
            v = (g - 0.5) / 0.25
        else:                       # Sobel gradient magnitude of the luminance, standardised per image
            gxy = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), self.sobel)
            mag = gxy.pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
            v = (mag - mag.mean((2, 3), keepdim=True)) / (mag.std((2, 3), keepdim=True) + 1e-5)
        return v.expand(-1, c, -1, -1)


def make_view(name: str, dataset) -> View:
    check_choice("crossmodal", "student_view", name, VIEWS)
    return View(name, dataset._scale, dataset._shift).to(dataset.device)


class ViewModel(nn.Module):
    """Evaluation wrapper: dataset images -> view -> student. Taps are forwarded (`model.` prefix)
    so the trainer's probes capture the student's stages; state_dict is the bare student's."""

    def __init__(self, view: View, model: nn.Module):
        super().__init__()
        self.view, self.model = view, model
        for attr in ("kd_stages", "kd_preact"):
            if getattr(model, attr, None):
                setattr(self, attr, [f"model.{s}" for s in getattr(model, attr)])
        for attr in ("kd_embedding", "kd_classifier"):
            if getattr(model, attr, None):
                setattr(self, attr, f"model.{getattr(model, attr)}")

    def forward(self, x):
        return self.model(self.view(x))

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)


@register_scheme
class CrossModal(Offline):
    """Offline KD on paired views: the frozen teacher (trained on the dataset's own images, the
    usual reused teacher run) gets x, the student gets view(x); CE + the config's knowledge terms
    (KD by default) as in offline KD. Views: grayscale (luminance; not for grey datasets, where it
    would be the input itself), edges (Sobel magnitude -- the default, meaningful on any dataset,
    so `bench schemes` runs it on digits too), lowres (average-pool x4, upsample back)."""
    key = "crossmodal"
    name = "Cross-modal KD"
    category = "algorithm"
    paper = Paper("Saurabh Gupta, Judy Hoffman, Jitendra Malik", "Cross Modal Distillation for Supervision Transfer",
                  2016, "CVPR", "1507.00448")
    equation = (r"\mathcal{L} = w_{CE}\,\mathrm{CE}(s(v(x)), y) + \sum_m w_m\,\mathcal{L}_m\big(s(v(x)),\ t(x)\big)")
    hparams = (HParam("student_view", "edges", help="the student's modality: grayscale | edges | lowres",
                      choices=VIEWS),)
    needs_teacher = True
    uses_methods = True
    notes = ("Teacher: the dataset's images (RGB on shapes); student: a view computed on the device. "
             "The stored student expects the view as input (see explorer.schemes.cross_modal.make_view).")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        name = self.hp["student_view"]
        if name == "grayscale" and ctx.dataset.shape[0] == 1:
            raise ValueError(f"scheme 'crossmodal': {ctx.dataset.name} is already grey, so the grayscale view "
                             "would be the teacher's input itself; choose student_view=edges or lowres")
        self.view = make_view(name, ctx.dataset)

    def teacher_outputs(self, batch: Batch):
        return super().teacher_outputs(dataclasses.replace(batch, x=self._x_teacher))

    def train_step(self, batch: Batch):
        """Offline KD with the student's batch in its view; the teacher keeps the original images."""
        self._x_teacher = batch.x
        return super().train_step(dataclasses.replace(batch, x=self.view(batch.x)))

    def eval_models(self):
        return {"student": ViewModel(self.view, self.student)}
