"""Relational knowledge: how a model arranges samples relative to each other.

Matrices are float64 numpy arrays. Inputs are (n, D) embeddings (anything with more dims is
flattened per sample), torch tensors or numpy arrays; probe embeddings can be passed directly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.spatial.distance import cdist

from ._util import as_numpy, as_tensor, labels_numpy

__all__ = ["cosine_gram", "rkd_distance_matrix", "rkd_angle_stats", "sort_by_class",
           "class_boundaries", "relation_gap", "dark_knowledge"]


def _emb64(emb) -> np.ndarray:
    """(n, ...) -> (n, D) float64 numpy. The relation maths is small (n ~ hundreds) and runs in
    numpy on purpose: no thread-pool wake-ups, which dominate tiny torch ops on a busy CPU."""
    a = as_numpy(emb, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    a = a.reshape(a.shape[0], -1)
    if not np.isfinite(a).all():
        raise ValueError("embeddings contain NaN or inf")
    return a


def cosine_gram(emb) -> np.ndarray:
    """(n, n) cosine similarities of the samples' embeddings. Symmetric, values in [-1, 1],
    diagonal exactly 1 (0 for an all-zero embedding, whose direction is undefined)."""
    e = _emb64(emb)
    norms = np.linalg.norm(e, axis=1)
    u = e / np.where(norms > 0, norms, 1.0)[:, None]
    g = np.clip(u @ u.T, -1.0, 1.0)
    g = 0.5 * (g + g.T)
    np.fill_diagonal(g, (norms > 0).astype(np.float64))
    return g


def rkd_distance_matrix(emb) -> np.ndarray:
    """RKD-D's relation (Park et al. 2019): Euclidean distances divided by their mean over
    distinct pairs (i != j). Symmetric, zero diagonal, off-diagonal mean exactly 1."""
    e = _emb64(emb)
    n = e.shape[0]
    if n < 2:
        raise ValueError(f"rkd_distance_matrix needs at least 2 samples; got n={n}")
    d = cdist(e, e)                       # exact differences, not |a|^2 + |b|^2 - 2ab
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    mean = d.sum() / (n * (n - 1))
    if mean <= 0:
        raise ValueError("rkd_distance_matrix: all embeddings are identical (mean distance 0)")
    return d / mean


@lru_cache(maxsize=8)
def _triplets(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    j, i, k = np.meshgrid(np.arange(m), np.arange(m), np.arange(m), indexing="ij")
    keep = (i != j) & (k != j) & (i != k)
    out = (j[keep], i[keep], k[keep])
    for a in out:
        a.flags.writeable = False        # cached: shared between calls
    return out


def rkd_angle_stats(emb, max_samples: int = 64, bins: int = 40, seed: int = 0) -> dict:
    """Distribution of RKD-A's triplet angle cosines (Park et al. 2019).

    For every ordered triplet (i, j, k) of distinct samples, cos of the angle at j between
    e_i - e_j and e_k - e_j. With n > max_samples, a seeded random subset of max_samples rows is
    used (the same rows for any two models given the same n and seed, so teacher and student stay
    comparable). Returns {"cos": (m(m-1)(m-2),) array, "hist": counts, "edges": bins+1 edges on
    [-1, 1], "density": hist normalised to integrate to 1, "mean", "std", "n_triplets", "rows"}.
    """
    e = _emb64(emb)
    n = e.shape[0]
    if n < 3:
        raise ValueError(f"rkd_angle_stats needs at least 3 samples; got n={n}")
    rows = np.arange(n)
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        e = e[rows]
    m = e.shape[0]
    # (e_i - e_j).(e_k - e_j) = G_ik - G_ij - G_jk + G_jj from the Gram matrix: O(m^3) memory, not O(m^2 D)
    g = e @ e.T
    gd = np.diag(g)
    d = np.sqrt(np.maximum(gd[:, None] + gd[None, :] - 2.0 * g, 0.0))     # d[i, j] = |e_i - e_j|
    j, i, k = _triplets(m)
    dot = g[i, k] - g[i, j] - g[j, k] + gd[j]
    den = d[i, j] * d[k, j]
    vals = np.clip(np.divide(dot, den, out=np.zeros_like(dot), where=den > 0), -1.0, 1.0)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    hist, _ = np.histogram(vals, bins=edges)
    width = edges[1] - edges[0]
    density = hist / max(hist.sum(), 1) / width
    return {"cos": vals, "hist": hist, "edges": edges, "density": density,
            "mean": float(vals.mean()), "std": float(vals.std()), "n_triplets": int(vals.size),
            "rows": rows}


def sort_by_class(mat, y) -> tuple[np.ndarray, np.ndarray]:
    """Permute rows and columns so samples are grouped by label (stable: ties keep their order).
    Returns (permuted matrix, order); y[order] is sorted."""
    m = as_numpy(mat)
    y = labels_numpy(y)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != y.size:
        raise ValueError(f"sort_by_class: need an (n, n) matrix and n labels; got {m.shape} and {y.size}")
    order = np.argsort(y, kind="stable")
    return m[np.ix_(order, order)], order


def class_boundaries(y_sorted) -> list[int]:
    """Positions where the (sorted) label changes: row i is the first of a new class."""
    y = labels_numpy(y_sorted)
    return [int(i) for i in np.flatnonzero(np.diff(y) != 0) + 1]


def relation_gap(m_t, m_s) -> dict:
    """How differently two models relate the same samples, over the off-diagonal entries:
    {"pearson": correlation (1 = same relational structure), "mean_abs_diff", "max_abs_diff"}."""
    a, b = as_numpy(m_t, np.float64), as_numpy(m_s, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"relation_gap: need two (n, n) matrices of the same shape; got {a.shape}, {b.shape}")
    off = ~np.eye(a.shape[0], dtype=bool)
    x, z = a[off], b[off]
    if x.size < 2 or x.std() == 0 or z.std() == 0:
        r = float("nan")
    else:
        r = float(np.corrcoef(x, z)[0, 1])
    d = np.abs(x - z)
    return {"pearson": r, "mean_abs_diff": float(d.mean()) if d.size else 0.0,
            "max_abs_diff": float(d.max()) if d.size else 0.0}


def dark_knowledge(teacher_logits, y, temperature: float = 4.0, num_classes: int | None = None) -> np.ndarray:
    """(C, C): row c is the mean temperature-softened teacher distribution over the samples whose
    true class is c (Hinton's "dark knowledge"). Rows sum to 1; a class without samples gets a
    row of NaN."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    z = as_tensor(teacher_logits).to(torch.float64)
    y = labels_numpy(y)
    if z.dim() != 2 or z.shape[0] != y.size:
        raise ValueError(f"dark_knowledge: need (N, C) logits and N labels; got {tuple(z.shape)} and {y.size}")
    c = num_classes or z.shape[1]
    p = torch.softmax(z / temperature, dim=1).numpy()
    out = np.full((c, z.shape[1]), np.nan)
    for k in range(c):
        sel = y == k
        if sel.any():
            out[k] = p[sel].mean(0)
    return out
