from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import crd_nce_loss
from .registry import register_method

_BANK_LIMIT = 64 * 2 ** 20   # floats per bank (256 MiB) above which we warn: ImageNet-sized banks are large


@register_method
class CRD(Method):
    """Contrastive representation distillation: an NCE objective that makes the student's embedding
    of x pick out the teacher's embedding of x among K embeddings of other training images, and
    vice versa. The K negatives come from two memory banks (one per network) of L2-normalised
    128-d embeddings of every training image, refreshed by momentum at batch.index."""
    key = "crd"
    name = "Contrastive Representation Distillation"
    category = "relation"
    paper = Paper("Yonglong Tian, Dilip Krishnan, Phillip Isola", "Contrastive Representation Distillation",
                  2020, "ICLR", "1910.10699")
    equation = (r"h(a,b) = \frac{e^{a^\top b/\tau}/Z}{e^{a^\top b/\tau}/Z + K/N},\ \mathcal{L}_{CRD} = "
                r"-\tfrac1B\sum_i\Big[\log h(s_i,\bar t_i) + \sum_{k=1}^{K}\log\big(1-h(s_i,\bar t_{n_k})\big)\Big]"
                r" + (s \leftrightarrow t)")
    hparams = (
        HParam("feat_dim", 128, 16, 512, "embedding width of both heads and the banks"),
        HParam("nce_k", 16384, 16, 65536, "negatives per anchor (capped at n_train - 1)", log=True),
        HParam("nce_t", 0.07, 0.01, 1.0, "temperature tau"),
        HParam("nce_m", 0.5, 0.0, 0.99, "memory-bank momentum"),
    )
    needs = frozenset({"embedding"})
    default_weight = 0.8
    default_ce_weight = 1.0
    convention = ("RepDistiller CRDLoss/ContrastMemory: Embed = linear + L2 norm, Z = mean(exp) * N fixed at "
                  "first use, NCE with uniform noise P_n = 1/N, loss = student-anchor + teacher-anchor terms")
    notes = ("CRD's best row adds KD: run it with kd at weight 0.8 as a second method. Banks are n_train x "
             "feat_dim buffers each (n_train must be the training-set size; batch.index indexes them). "
             "Negatives are drawn uniformly from the other training images; the reference's 'exact' mode draws "
             "them from other classes. No queue fallback: very large banks only warn.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        n, d = ctx.n_train, self.hp["feat_dim"]
        if n < 2:
            raise ValueError(f"crd: needs n_train >= 2 to draw negatives, got {n}")
        if n * d > _BANK_LIMIT:
            warnings.warn(f"crd: two memory banks of {n} x {d} floats ({2 * n * d * 4 / 2**30:.1f} GiB)")
        self.k = min(self.hp["nce_k"], n - 1)
        self.embed_s = nn.Linear(ctx.student_embedding, d)
        self.embed_t = nn.Linear(ctx.teacher_embedding, d)
        stdv = 1.0 / math.sqrt(d / 3)   # reference init: uniform(-stdv, stdv), not normalised
        self.register_buffer("memory_s", torch.rand(n, d).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n, d).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))   # normalisation constants, set at first use
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, 1+K) bank rows: the positive, then K uniform negatives that are never the positive."""
        neg = torch.randint(0, self.ctx.n_train - 1, (idx.numel(), self.k), device=idx.device)
        neg = neg + (neg >= idx.view(-1, 1)).long()   # skip the anchor's own row
        return torch.cat([idx.view(-1, 1), neg], dim=1)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        f_s = F.normalize(self.embed_s(s.embedding.flatten(1)), dim=1)
        f_t = F.normalize(self.embed_t(t.embedding.detach().flatten(1)), dim=1)
        idx = batch.index.to(f_s.device).long()
        rows = self.sample(idx)
        tau = self.hp["nce_t"]
        # student anchors vs the teacher bank, teacher anchors vs the student bank
        out_s = torch.exp(torch.einsum("bkd,bd->bk", self.memory_t[rows], f_s) / tau)
        out_t = torch.exp(torch.einsum("bkd,bd->bk", self.memory_s[rows], f_t) / tau)
        if self.z_s < 0:   # Z estimated once from the first batch, as the reference does
            self.z_s.fill_(out_s.mean().item() * self.ctx.n_train)
            self.z_t.fill_(out_t.mean().item() * self.ctx.n_train)
        n = self.ctx.n_train
        loss = crd_nce_loss(out_s / self.z_s, n) + crd_nce_loss(out_t / self.z_t, n)
        if self.training:
            self._update(self.memory_s, idx, f_s)
            self._update(self.memory_t, idx, f_t)
        return {"crd": loss}

    @torch.no_grad()
    def _update(self, memory: torch.Tensor, idx: torch.Tensor, f: torch.Tensor):
        m = self.hp["nce_m"]
        new = F.normalize(memory[idx] * m + f.detach() * (1 - m), dim=1)
        memory.index_copy_(0, idx, new)
