"""CKA between every stage of one model and every stage of another, on one fixed sample set.

`cka_matrix(kind="linear")` computes each stage's centred Gram matrix once (`stage_grams`, which can
be cached: a frozen teacher's Grams on a fixed probe set never change), then every pair is a dot
product of unit-normalised Grams. The (n, d) x (d, n) products dominate the cost (n^2 d
multiply-adds per stage); they run in `gram_dtype`: float32 by default (features are centred first,
then the product; CKA agrees with float64 to ~1e-7), torch.float64 for exact, torch.bfloat16 ~1.5x
faster where the CPU has bf16 units, CKA errors ~1e-4 (tested <= 1e-3). Everything after the product
is float64. Memory: n^2 x 8 bytes per stage (8 MB at n = 1000). `features_for` collects the stages'
features from a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.taps import tap
from ._util import as_tensor, eval_mode, model_device
from .cka import (_CONST_RTOL, CKAAccumulator, _batches, _centre_gram, _centred, _rbf_gram, _sample_count,
                  stage_features)

__all__ = ["StageGrams", "stage_grams", "cka_from_grams", "cka_matrix", "features_for"]


def _sym_gram(t: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """t @ t.T computing only the block upper triangle (5/8 of the products for 4 blocks), then
    mirroring it: the Gram matrix is symmetric, and the product dominates cka_matrix's time."""
    n = t.shape[0]
    if n < 256 or blocks < 2:
        return t @ t.T
    edges = np.linspace(0, n, blocks + 1).round().astype(int)
    g = torch.empty(n, n, dtype=t.dtype)
    for a, b in zip(edges[:-1], edges[1:]):
        g[a:b, a:] = t[a:b] @ t[a:].T
    up = torch.triu(g)
    return up + torch.triu(g, 1).T


# ----------------------------------------------------------------------------------- matrices
def _gram_unit(x, name: str, gram_dtype) -> torch.Tensor:
    """Centred Gram matrix of one stage, float64, normalised to unit Frobenius norm, flattened.

    Features are centred in float32 (float64 if they are float64 or gram_dtype is float64); the
    Gram product runs in gram_dtype; centring of the Gram and everything after it in float64.
    This is cka_matrix's hot path, so the (n, d) features are read as few times as possible: the
    constant / NaN checks use the mean and the Gram matrix instead of extra passes.
    """
    t = as_tensor(x)
    if t.dim() < 1 or t.shape[0] < 2:
        raise ValueError(f"stage {name!r}: CKA needs (n, ...) features with n >= 2; got shape {tuple(t.shape)}")
    n = t.shape[0]
    work = torch.float64 if (t.dtype == torch.float64 or gram_dtype == torch.float64) else torch.float32
    t = t.reshape(n, -1)
    if t.dtype != work:
        t = t.to(work)
    mean = t.mean(0, keepdim=True)
    xc = t - mean
    probe = max(float(xc[0].abs().max()), float(mean.abs().max()))
    if not math.isfinite(probe):
        raise ValueError(f"stage {name!r}: features contain NaN or inf")
    scale = 1.0
    if not 1e-8 <= probe <= 1e8:                       # extreme values: rescale before squaring
        scale = float(torch.linalg.vector_norm(xc, ord=float("inf")))
        if not math.isfinite(scale):
            raise ValueError(f"stage {name!r}: features contain NaN or inf")
        if scale > 0:
            xc.div_(scale)
        else:
            scale = 1.0
    k = _sym_gram(xc if xc.dtype == gram_dtype else xc.to(gram_dtype)).to(torch.float64)
    if not torch.isfinite(k).all():
        raise ValueError(f"stage {name!r}: features contain NaN or inf")
    spread = float(torch.trace(k))                     # ||Xc||_F^2
    level = n * float((mean.to(torch.float64) ** 2).sum()) / scale ** 2
    tol = _CONST_RTOL if work == torch.float64 else 1e-6
    if spread <= 0 or spread <= tol * tol * level:
        raise ValueError(f"stage {name!r}: features are constant over the {n} samples; "
                         "CKA is undefined for a constant representation")
    k = _centre_gram(k)                   # removes the tiny drift of a low-precision product
    return (k / torch.linalg.vector_norm(k)).reshape(-1)


@dataclass(frozen=True)
class StageGrams:
    """Centred, unit-Frobenius-norm Gram matrices of a model's stages on one fixed sample set,
    flattened: grams is (stages, n*n) float64. CKA between two stages is the dot product of their
    rows. Worth caching: a frozen teacher's Grams on a fixed probe set never change, so comparing
    it to many students / epochs only costs the students' Grams."""
    names: tuple[str, ...]
    grams: torch.Tensor
    n: int
    kind: str


def stage_grams(feats, kind: str = "linear", sigma_frac: float = 0.8,
                gram_dtype: torch.dtype = torch.float32) -> StageGrams:
    """Each stage's centred Gram matrix, computed once (see StageGrams). kind: "linear" or "rbf"."""
    f = stage_features(feats)
    n = _sample_count(f, who="stage_grams")
    out = []
    if kind == "linear":
        for k, v in f.items():
            out.append(_gram_unit(v, k, gram_dtype))
    elif kind == "rbf":
        if sigma_frac <= 0:
            raise ValueError("sigma_frac must be > 0")
        for k, v in f.items():
            g = _centre_gram(_rbf_gram(_centred(v, k), sigma_frac, k))
            out.append((g / torch.linalg.vector_norm(g)).reshape(-1))
    else:
        raise ValueError(f"stage_grams: kind must be 'linear' or 'rbf', got {kind!r}")
    return StageGrams(tuple(f), torch.stack(out), n, kind)


def cka_from_grams(ga: StageGrams, gb: StageGrams | None = None) -> pd.DataFrame:
    """CKA matrix (rows ga's stages, cols gb's) from precomputed StageGrams."""
    gb = ga if gb is None else gb
    if ga.n != gb.n:
        raise ValueError(f"CKA compares the same samples: got n={ga.n} and n={gb.n}")
    if ga.kind != gb.kind:
        raise ValueError(f"cannot mix {ga.kind!r} and {gb.kind!r} Gram matrices")
    m = (ga.grams @ gb.grams.T).clamp(-1.0, 1.0)
    return pd.DataFrame(m.numpy(), index=pd.Index(list(ga.names), name="a"),
                        columns=pd.Index(list(gb.names), name="b"))


def cka_matrix(feats_a, feats_b=None, kind: str = "linear", sigma_frac: float = 0.8,
               batch_size: int = 256, gram_dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """CKA between every stage of `feats_a` (rows) and every stage of `feats_b` (columns).

    feats_*: {name: (n, ...) tensor}, a probe side dict ({"stages", "stage_names", ...}), or (for
    linear / rbf) precomputed StageGrams; feats_b=None compares a with itself. kind: "linear" (each
    stage's centred Gram once, then all pairs as dot products of unit-normalised Grams), "rbf"
    (sigma = sigma_frac x median distance), or "minibatch" (unbiased HSIC over batches of
    ~batch_size; see CKAAccumulator). gram_dtype: see this module's docstring (float32 default;
    bfloat16 is faster where the CPU supports it, with CKA errors ~1e-4).
    """
    if kind == "minibatch":
        fa = stage_features(feats_a)
        fb = fa if feats_b is None else stage_features(feats_b)
        if not fa or not fb:
            raise ValueError("cka_matrix: no stages given")
        n = _sample_count(fa, fb, who="cka_matrix")
        fa_t = {k: as_tensor(v) for k, v in fa.items()}
        fb_t = None if feats_b is None else {k: as_tensor(v) for k, v in fb.items()}
        acc = CKAAccumulator()
        for sl in _batches(n, batch_size):
            acc.update({k: v[sl] for k, v in fa_t.items()},
                       None if fb_t is None else {k: v[sl] for k, v in fb_t.items()})
        return acc.result().rename_axis(index="a", columns="b")
    if kind not in ("linear", "rbf"):
        raise ValueError(f"kind must be 'linear', 'rbf' or 'minibatch', got {kind!r}")

    def grams(f):
        return f if isinstance(f, StageGrams) else stage_grams(f, kind, sigma_frac, gram_dtype)
    if feats_b is not None and not isinstance(feats_a, StageGrams) and not isinstance(feats_b, StageGrams):
        _sample_count(stage_features(feats_a), stage_features(feats_b), who="cka_matrix")   # before the costly part
    ga = grams(feats_a)
    gb = None if feats_b is None else grams(feats_b)
    return cka_from_grams(ga, gb)


# ----------------------------------------------------------------------------------- collection
@torch.no_grad()
def features_for(model: nn.Module, x, specs, batch_size: int = 256,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Run `model` over x in batches (eval mode, no grad) and collect the tapped features.

    x: (N, C, H, W) tensor, or an iterable of batches (tensors or (x, y, ...) tuples).
    Returns {spec: (N, ...) CPU tensor in `dtype`}. A hook that never fires raises
    taps.TapError (a ValueError) naming it.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("features_for: no tap specs given")
    device = model_device(model)
    if isinstance(x, torch.Tensor):
        batches = (x[i:i + batch_size] for i in range(0, x.shape[0], batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in x)
    out: dict[str, list[torch.Tensor]] = {s: [] for s in specs}
    with eval_mode(model):
        for xb in batches:
            with tap(model, specs) as feats:
                model(xb.to(device))
            for s in specs:
                out[s].append(feats[s].detach().to("cpu", dtype))   # raises TapError if never fired
    if not out[specs[0]]:
        raise ValueError("features_for: no input batches")
    return {s: torch.cat(v) for s, v in out.items()}
