"""Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying Attention Flow in Transformers", arXiv:2005.00928)
and each block's class-token attention, from the attention probabilities a transformer's taps record
(models/vit.py: `kd_attention`, each block's softmax attention (B, heads, N, N), prefix tokens first).

Rollout, as in the paper (Eq. 1 and its residual correction): the heads of a block are fused by their mean,
the residual connection is accounted for by A' = 0.5 A + 0.5 I, each row renormalised to sum to 1, and the
blocks multiplied from the first: R = A'_L ... A'_2 A'_1. The class token's row of R over the patch tokens,
on their h x w grid, is the map of what the class token's final representation draws from each patch.
"""
from __future__ import annotations

import math

import torch

__all__ = ["rollout", "rollout_map", "cls_attention"]


def _side(n_patches: int) -> int:
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patch tokens do not form a square grid")
    return side


def _check(attentions) -> list[torch.Tensor]:
    attentions = [torch.as_tensor(a).float() for a in attentions]
    if not attentions:
        raise ValueError("rollout needs the attention of at least one block")
    for a in attentions:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2] or a.shape != attentions[0].shape:
            raise ValueError(f"attention must be (B, heads, N, N), the same in every block; got {tuple(a.shape)}")
    return attentions


def rollout(attentions, residual: float = 0.5) -> torch.Tensor:
    """(B, N, N): the rolled-out attention of the whole stack, blocks first to last (Abnar & Zuidema Eq. 1).
    residual: the weight of the identity added to each fused attention (0.5 in the paper)."""
    attentions = _check(attentions)
    b, _, n, _ = attentions[0].shape
    eye = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device)
    out = eye.expand(b, n, n)
    for a in attentions:
        fused = (1 - residual) * a.mean(dim=1) + residual * eye
        fused = fused / fused.sum(dim=-1, keepdim=True)
        out = fused @ out
    return out


def rollout_map(attentions, prefix_tokens: int = 1, residual: float = 0.5) -> torch.Tensor:
    """(B, h, w): the class token's (token 0) row of the rollout over the patch tokens on their grid."""
    r = rollout(attentions, residual)[:, 0, prefix_tokens:]
    side = _side(r.shape[-1])
    return r.reshape(r.shape[0], side, side)


def cls_attention(attentions, prefix_tokens: int = 1) -> torch.Tensor:
    """(B, blocks, heads, h, w): how much each head of each block's class token attends to each patch."""
    attentions = _check(attentions)
    rows = torch.stack([a[:, :, 0, prefix_tokens:] for a in attentions], dim=1)
    side = _side(rows.shape[-1])
    return rows.reshape(*rows.shape[:3], side, side)
