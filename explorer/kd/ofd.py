from __future__ import annotations

import torch
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import ofd_loss
from .pairing import Connector, ctx_pairs, match_spatial
from .registry import register_method


class _Margin(nn.Module):
    """Per-channel teacher margin m_c = E[t_c | t_c < 0], estimated from the teacher's pre-ReLU
    features of the first `batches` training batches, then frozen.

    The paper derives it in closed form from the teacher BN's gamma/beta, assuming a Gaussian
    pre-activation; generic hooks cannot reach that BN, so we measure the same expectation
    directly. Channels with no negative value seen fall back to -3 std (the paper's fallback)."""

    def __init__(self, channels: int):
        super().__init__()
        for name in ("neg_sum", "neg_cnt", "sum", "sumsq"):
            self.register_buffer(name, torch.zeros(channels))
        self.register_buffer("n", torch.zeros(()))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, t: torch.Tensor):
        x = t.transpose(0, 1).flatten(1).float()               # (C, B*H*W)
        neg = x.clamp(max=0)
        self.neg_sum += neg.sum(1)
        self.neg_cnt += (x < 0).sum(1)
        self.sum += x.sum(1)
        self.sumsq += x.pow(2).sum(1)
        self.n += x.size(1)
        self.batches += 1

    def value(self) -> torch.Tensor:
        mean = self.sum / self.n.clamp(min=1)
        std = (self.sumsq / self.n.clamp(min=1) - mean.pow(2)).clamp(min=0).sqrt()
        m = torch.where(self.neg_cnt > 0, self.neg_sum / self.neg_cnt.clamp(min=1), -3 * std)
        return m


@register_method
class OFD(Method):
    key = "ofd"
    name = "Overhaul of Feature Distillation"
    category = "feature"
    paper = Paper("Byeongho Heo, Jeesoo Kim, Sangdoo Yun, Hyojin Park, Nojun Kwak, Jin Young Choi",
                  "A Comprehensive Overhaul of Feature Distillation", 2019, "ICCV", "1904.01866")
    equation = (r"\mathcal{L}_{OFD} = \sum_i \tfrac{2^{-(n-1-i)}}{B}\sum \big[(r(F^s_i)-\hat t_i)^2\big]"
                r"_{\neg(s\le \hat t\le 0)},\ \hat t = \max(F^t_i, m),\ m_c = \mathbb{E}[F^t_c\mid F^t_c<0]")
    hparams = (HParam("margin_batches", 20, 1, 500, "training batches used to estimate the teacher margin"),)
    needs = frozenset({"preact"})
    default_weight = 1e-3
    default_ce_weight = 1.0
    convention = ("official OFD CIFAR code: partial L2 summed over elements, / batch, stage i weighted "
                  "1/2^(n-1-i), total x 1e-3 (the run weight)")
    notes = ("Uses pre-ReLU stage features (preact[1:]). Connector 1x1 conv + BN is always learnable. The "
             "teacher margin is estimated from the teacher's own pre-ReLU features over the first "
             "margin_batches training batches (buffer, then frozen) instead of from its BN parameters.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)
        self.connectors = nn.ModuleList(Connector(ctx.student_stages[i][0], ctx.teacher_stages[j][0], force=True)
                                        for i, j in self.pairs)
        self.margins = nn.ModuleList(_Margin(ctx.teacher_stages[j][0]) for _, j in self.pairs)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        n, loss = len(self.pairs), 0.0
        for k, ((i, j), conn, margin) in enumerate(zip(self.pairs, self.connectors, self.margins)):
            fs, ft = match_spatial(s.preact[i], t.preact[j].detach())
            if self.training and margin.batches < self.hp["margin_batches"]:
                margin.update(ft)
            loss = loss + ofd_loss(conn(fs), ft, margin.value().to(ft.device)) / 2 ** (n - 1 - k)
        return {"ofd": loss}
