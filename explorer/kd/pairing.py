"""Which student stage learns from which teacher stage, and how mismatched maps are reconciled.

Stages are the (C, H, W) shapes in a PairContext, shallow -> deep, index 0 being the stem; a sequence model's
block states (B, T, C) arrive as (C, T, 1) maps (models/sequence.py, applied by the taps), so the same rule pairs
LM blocks: a 1-block student's block meets the teacher's last block.
Every feature/relation method that reads stages goes through `pair_stages`; an explicit
`PairContext.pairs` overrides the automatic choice everywhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Shape = Sequence[int]


def _check_shapes(shapes: Sequence[Shape], who: str, need_maps: bool):
    if not shapes:
        raise ValueError(f"no {who} stages were tapped: this method distils intermediate features. "
                         f"Give the {who} model kd_stages (or pass its stage module names).")
    if need_maps:
        for i, sh in enumerate(shapes):
            if len(sh) != 3:
                raise ValueError(f"{who} stage {i} has shape {tuple(sh)}, not (C, H, W): feature methods need "
                                 "4-D (B, C, H, W) maps. Tap a convolutional module or choose a relation method "
                                 "that works on embeddings.")


def pair_stages(student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape], skip_stem: bool = True,
                explicit: Sequence[tuple[int, int]] | None = None, need_maps: bool = True) -> list[tuple[int, int]]:
    """(student index, teacher index) pairs, shallow -> deep.

    explicit: used as given after range checks (indices count the stem as 0).
    Otherwise, after dropping the stem (skip_stem, as CRD's feat[1:-1]): equal counts pair 1:1;
    unequal counts pair every stage of the shorter list with the stage of the longer list that
    ends at the nearest relative depth, so deepest always meets deepest.
    """
    _check_shapes(student_shapes, "student", need_maps)
    _check_shapes(teacher_shapes, "teacher", need_maps)
    ns, nt = len(student_shapes), len(teacher_shapes)
    if explicit is not None:
        if len(explicit) == 0:
            raise ValueError("explicit stage pairs are empty; give at least one (student, teacher) pair or None")
        for i, j in explicit:
            if not (0 <= i < ns and 0 <= j < nt):
                raise ValueError(f"stage pair ({i}, {j}) is out of range: the student has stages 0..{ns - 1} "
                                 f"and the teacher 0..{nt - 1} (0 is the stem). Fix the explicit pairs.")
        return [(int(i), int(j)) for i, j in explicit]
    s0 = 1 if skip_stem and ns > 1 else 0
    t0 = 1 if skip_stem and nt > 1 else 0
    s_idx, t_idx = list(range(s0, ns)), list(range(t0, nt))
    if len(s_idx) == len(t_idx):
        return list(zip(s_idx, t_idx))
    short, long_ = (s_idx, t_idx) if len(s_idx) < len(t_idx) else (t_idx, s_idx)
    n, m = len(short), len(long_)
    # stage k of n ends at depth (k+1)/n; pick the long-side stage ending closest to it
    matched = [long_[int((k + 1) * m / n + 0.5) - 1] for k in range(n)]
    return list(zip(short, matched)) if short is s_idx else list(zip(matched, short))


def ctx_pairs(ctx, skip_stem: bool = True) -> list[tuple[int, int]]:
    """pair_stages on a PairContext, honouring its explicit override."""
    return pair_stages(ctx.student_stages, ctx.teacher_stages, skip_stem, ctx.pairs)


def teacher_stage_for(student_index: int, ctx) -> int:
    """The teacher stage one student stage learns from (FitNet's hint), stem included: its partner in
    pair_stages when it has one, else -- a deeper student, some of whose stages pair with none -- the
    teacher stage ending at the nearest relative depth, as pair_stages matches them."""
    paired = dict(pair_stages(ctx.student_stages, ctx.teacher_stages, skip_stem=False))
    if student_index in paired:
        return paired[student_index]
    ns, nt = len(ctx.student_stages), len(ctx.teacher_stages)
    return min(max(int((student_index + 1) * nt / ns + 0.5) - 1, 0), nt - 1)


def check_map(x: torch.Tensor, who: str) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"{who}: expected a 4-D (B, C, H, W) feature map, got shape {tuple(x.shape)}; "
                         "feature methods need convolutional stage taps")
    return x


def match_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resolve a spatial mismatch by adaptive average pooling the larger map down to the smaller
    (per axis). Pooling, not upsampling, so neither side gets invented detail; gradients still
    flow through the pooled student map. Channel mismatch is a Connector's job, not this one's."""
    check_map(s, "student feature")
    check_map(t, "teacher feature")
    if s.shape[-2:] == t.shape[-2:]:
        return s, t
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    if s.shape[-2:] != size:
        s = F.adaptive_avg_pool2d(s, size)
    if t.shape[-2:] != size:
        t = F.adaptive_avg_pool2d(t, size)
    return s, t


class Connector(nn.Module):
    """Learnable 1x1 conv + BN mapping student channels to teacher channels (OFD's connector).

    Identity when the channel counts are equal and `force` is False, so an equal-width pair is
    compared directly. Owned by the method, hence optimised with the student. norm=False: a 1x1 conv
    with a bias and no BN -- on a sequence model's (B, C, T, 1) token map, the per-token linear map
    W h_t + b (TinyBERT's W_h, their fit_dense = nn.Linear), its default init.
    """

    def __init__(self, c_in: int, c_out: int, force: bool = False, norm: bool = True):
        super().__init__()
        self.identity = c_in == c_out and not force
        if not self.identity:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=not norm)
            self.bn = nn.BatchNorm2d(c_out) if norm else nn.Identity()
            if norm:
                nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else self.bn(self.conv(x))
