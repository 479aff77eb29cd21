from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import vid_nll
from .pairing import ctx_pairs, match_spatial
from .registry import register_method


class _VIDHead(nn.Module):
    """Predicts the teacher map's mean from the student map (small 1x1-conv MLP) with a learned
    per-channel variance (softplus keeps it positive): a Gaussian q(t | s) whose likelihood lower-
    bounds the mutual information between the two stages."""

    def __init__(self, c_s: int, c_mid: int, c_t: int, init_var: float, eps: float = 1e-5):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(c_s, c_mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_mid, c_mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_mid, c_t, 1, bias=False))
        # inverse softplus so that the initial variance is init_var
        self.log_scale = nn.Parameter(torch.full((c_t,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def forward(self, fs, ft):
        return vid_nll(self.regressor(fs), ft, F.softplus(self.log_scale) + self.eps)


@register_method
class VID(Method):
    key = "vid"
    name = "Variational Information Distillation"
    category = "feature"
    paper = Paper("Sungsoo Ahn, Shell Xu Hu, Andreas Damianou, Neil D. Lawrence, Zhenwen Dai",
                  "Variational Information Distillation for Knowledge Transfer", 2019, "CVPR", "1904.05835")
    equation = (r"\mathcal{L}_{VID} = \sum_{(i,j)} \tfrac{1}{BCHW}\sum \tfrac12\Big(\log\sigma_c^2 + "
                r"\tfrac{(t_{c,h,w}-\mu_{c,h,w}(s))^2}{\sigma_c^2}\Big),\ \sigma_c^2 = \mathrm{softplus}(\alpha_c)+\epsilon")
    hparams = (HParam("init_var", 5.0, 0.1, 10.0, "initial predicted variance"),)
    needs = frozenset({"stages"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = "RepDistiller VIDLoss: element-mean NLL per pair (constant dropped), mid channels = teacher's"
    notes = "Pairs stages[1:]; larger map avg-pooled to the smaller. The loss can be negative (it is an NLL)."

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)
        cs = [ctx.student_stages[i][0] for i, _ in self.pairs]
        ct = [ctx.teacher_stages[j][0] for _, j in self.pairs]
        self.heads = nn.ModuleList(_VIDHead(a, b, b, self.hp["init_var"]) for a, b in zip(cs, ct))

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        loss = 0.0
        for (i, j), head in zip(self.pairs, self.heads):
            fs, ft = match_spatial(s.stages[i], t.stages[j].detach())
            loss = loss + head(fs, ft)
        return {"vid": loss}
