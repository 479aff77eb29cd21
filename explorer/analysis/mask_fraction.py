"""How much of a map falls on the object: for datasets whose object masks are known (the procedural
`shapes`), the fraction of an attention (or Grad-CAM) map's mass that lies inside the mask.

    fractions = mask_fraction(maps, masks)            # (B,) in [0, 1]

Contract (tested): each map is upsampled bilinearly (align_corners=False) to its mask's (H, W), negative
values are clipped to 0 (attention is >= 0; Grad-CAM is ReLU'd anyway), the map is normalised to sum 1,
and the fraction is the sum of the normalised map inside the mask. All mass inside -> 1; a uniform map ->
the mask's area fraction (the chance level a map that ignores the image would get); an all-zero map -> NaN.
Pure functions: tensors or arrays in, numpy out; nothing is modified.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._util import as_numpy, as_tensor, labels_numpy
from .cka import stage_features

__all__ = ["mask_fraction", "mask_area", "stage_mask_fractions", "rollout_mask_fraction", "class_mask_fractions"]


def _maps3(maps) -> torch.Tensor:
    m = as_tensor(maps).to(torch.float64)
    if m.dim() == 2:
        m = m[None]
    if m.dim() != 3:
        raise ValueError(f"mask_fraction: maps must be (H, W) or (B, H, W); got shape {tuple(m.shape)}")
    return m


def _masks3(masks) -> torch.Tensor:
    k = as_tensor(masks)
    if k.dim() == 2:
        k = k[None]
    if k.dim() != 3:
        raise ValueError(f"mask_fraction: masks must be (H, W) or (B, H, W); got shape {tuple(k.shape)}")
    return k.to(torch.bool)


def mask_fraction(maps, masks) -> np.ndarray:
    """(B,) fraction of each map's mass inside its mask (see the module docstring); one mask may serve all maps."""
    m, k = _maps3(maps), _masks3(masks)
    if k.shape[0] == 1 and m.shape[0] > 1:
        k = k.expand(m.shape[0], -1, -1)
    if k.shape[0] != m.shape[0]:
        raise ValueError(f"mask_fraction: {m.shape[0]} maps but {k.shape[0]} masks")
    if tuple(m.shape[-2:]) != tuple(k.shape[-2:]):
        m = F.interpolate(m[:, None], size=tuple(k.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    m = m.clamp_min(0)
    total = m.sum((1, 2))
    inside = (m * k).sum((1, 2))
    frac = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))
    return frac.numpy()


def mask_area(masks) -> np.ndarray:
    """(B,) the fraction of the image each mask covers: what a uniform map scores."""
    k = _masks3(masks)
    return k.to(torch.float64).mean((1, 2)).numpy()


def stage_mask_fractions(stages, masks, p: float = 2) -> dict[str, np.ndarray]:
    """{stage name: (B,) fraction} for already-captured stage features ({name: tensor} or a probe side dict):
    each stage's activation attention (mean over channels of |A|^p) scored against the masks."""
    out = {}
    for name, f in stage_features(stages).items():
        f = as_tensor(f).float()
        if f.dim() != 4:
            continue
        out[name] = mask_fraction(f.abs().pow(p).mean(1), masks)
    return out


def rollout_mask_fraction(side, masks) -> np.ndarray | None:
    """(B,) fraction of a transformer's attention rollout (a probe side's "rollout", (B, h, w) on the patch grid)
    inside the masks, computed as for stage attention (upsampled, clipped, normalised to sum 1); None when the
    side has no rollout (a CNN, an older probe)."""
    r = side.get("rollout") if hasattr(side, "get") else None
    return None if r is None else mask_fraction(as_tensor(r).float(), masks)


def class_mask_fractions(fractions, y, num_classes: int | None = None) -> np.ndarray:
    """(C,) mean fraction per class (NaN for a class without samples or with only NaN fractions)."""
    f = as_numpy(fractions, np.float64).reshape(-1)
    y = labels_numpy(y)
    if f.size != y.size:
        raise ValueError(f"class_mask_fractions: {f.size} fractions but {y.size} labels")
    c = num_classes if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    out = np.full(c, np.nan)
    for j in range(c):
        sel = (y == j) & ~np.isnan(f)
        if sel.any():
            out[j] = f[sel].mean()
    return out
