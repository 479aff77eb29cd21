from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import hcl_loss
from .pairing import ctx_pairs
from .registry import register_method


class _ABF(nn.Module):
    """Attention-based fusion: squeeze a student stage to `mid` channels, blend it with the fused
    residual coming from the deeper stage using two learned spatial attention maps, then map the
    result to the teacher stage's channels and size. The residual handed on to the next (shallower)
    level is the fused map *after* its resize to the teacher's size, as mdistiller's ABF.forward
    (mdistiller/distillers/ReviewKD.py) returns it; it matters only where student and teacher sizes differ."""

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.att = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual, out_size):
        x = self.conv1(x)
        if self.att is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.att(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:]
        if x.shape[-2:] != out_size:
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


@register_method
class ReviewKD(Method):
    """Knowledge review: each teacher level is predicted from the student's same level *and* all
    deeper ones (fused deep -> shallow by ABF), compared with a multi-scale (HCL) loss. The levels are
    the paired stages after the stem plus the pooled embedding as a 1x1 map, as in the reference."""
    key = "reviewkd"
    name = "ReviewKD"
    category = "feature"
    paper = Paper("Pengguang Chen, Shu Liu, Hengshuang Zhao, Jiaya Jia", "Distilling Knowledge via Knowledge "
                  "Review", 2021, "CVPR", "2104.09044")
    equation = (r"\mathcal{L}_{RKD} = \min(\tfrac{p}{p_w},1)\sum_i \mathrm{HCL}\big(\mathrm{ABF}_i(F^s_i, "
                r"\mathrm{ABF}_{i+1}), F^t_i\big),\ \mathrm{HCL} = \frac{\sum_{l} w_l\,\mathrm{MSE}(P_l(\cdot),P_l(\cdot))}{\sum_l w_l}")
    hparams = (
        HParam("mid_channels", 0, 0, 512, "ABF width; 0 = min(512, the student's embedding width), as the reference"),
        HParam("warmup", 20 / 240, 0.0, 0.5, "fraction of the run over which the loss ramps linearly from 0 to 1"),
    )
    needs = frozenset({"stages", "preact", "embedding"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("mdistiller ReviewKD: student post-ReLU stages, teacher pre-ReLU stages, both plus the pooled "
                  "feature as a 1x1 level; ABF passes on the resized fused map as the residual; HCL levels 4,2,1 "
                  "with halving weights; warm-up 20/240 epochs -> progress")
    notes = "Reviews the paired stages after the stem and the pooled embedding (the deepest level, not fused)."

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)
        mid = self.hp["mid_channels"] or min(512, ctx.student_embedding)
        widths = [(ctx.student_stages[i][0], ctx.teacher_stages[j][0]) for i, j in self.pairs]
        widths.append((ctx.student_embedding, ctx.teacher_embedding))
        # abfs[k] serves level k (the last is the pooled one); every level but the deepest fuses the one below
        self.abfs = nn.ModuleList(_ABF(c_s, mid, c_t, fuse=k < len(widths) - 1) for k, (c_s, c_t) in enumerate(widths))

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        student = [s.stages[i] for i, _ in self.pairs] + [s.embedding[:, :, None, None]]
        teacher = [t.preact[j].detach() for _, j in self.pairs] + [t.embedding.detach()[:, :, None, None]]
        outs, residual = [None] * len(student), None
        for k in reversed(range(len(student))):
            outs[k], residual = self.abfs[k](student[k], residual, teacher[k].shape[-2:])
        w = self.hp["warmup"]
        ramp = min(batch.progress / w, 1.0) if w > 0 else 1.0
        return {"reviewkd": ramp * hcl_loss(outs, teacher)}
