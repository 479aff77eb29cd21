"""Centred kernel alignment between layer representations.

Linear and RBF CKA follow Kornblith et al. 2019 ("Similarity of Neural Network Representations
Revisited"); minibatch CKA follows Nguyen et al. 2021 ("Do Wide and Deep Networks Learn the Same
Things?"), using the unbiased HSIC estimator of Song et al. 2012 summed over minibatches.

Conventions
- Features are (n, ...) tensors or arrays, flattened per sample to (n, d).
- linear_cka / rbf_cka / minibatch CKA are float64 throughout (features centred in float64;
  CKA is invariant to isotropic scaling, and extreme values are rescaled before squaring, so
  features of scale 1e-6 and 1e6 give the same, finite value).
- A stage whose features are constant over the samples has no centred Gram matrix, so CKA is
  undefined: we raise ValueError naming the stage rather than returning a silent 0 or NaN.
- `cka_matrix(kind="linear")` computes each stage's centred Gram matrix once (`stage_grams`, which
  can be cached: a frozen teacher's Grams on a fixed probe set never change), then every pair is
  a dot product of unit-normalised Grams. The (n, d) x (d, n) products dominate the cost
  (n^2 d multiply-adds per stage); they run in `gram_dtype`: float32 by default (features are
  centred first, then the product; CKA agrees with float64 to ~1e-7), torch.float64 for exact,
  torch.bfloat16 ~1.5x faster where the CPU has bf16 units, CKA errors ~1e-4 (tested <= 1e-3).
  Everything after the product is float64. Memory: n^2 x 8 bytes per stage (8 MB at n = 1000).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.taps import tap
from ._util import as_tensor, eval_mode, model_device

__all__ = [
    "linear_cka", "rbf_cka", "minibatch_cka", "CKAAccumulator", "cka_matrix", "features_for",
    "cka_over_epochs", "stage_features", "hsic_unbiased", "StageGrams", "stage_grams", "cka_from_grams",
]

_CONST_RTOL = 1e-12


# ----------------------------------------------------------------------------------- helpers
def stage_features(feats) -> dict[str, torch.Tensor]:
    """Accept {name: tensor}, a probe side {"stages": [...], "stage_names": [...]}, or a list."""
    if isinstance(feats, Mapping) and "stages" in feats and "stage_names" in feats:
        names, stages = list(feats["stage_names"]), list(feats["stages"])
        if len(names) != len(stages):
            raise ValueError(f"probe has {len(stages)} stages but {len(names)} stage_names")
        return dict(zip(names, stages))
    if isinstance(feats, Mapping):
        return dict(feats)
    if isinstance(feats, (list, tuple)):
        return {f"stage{i}": f for i, f in enumerate(feats)}
    raise TypeError(f"expected a dict of stage features or a probe side dict, got {type(feats).__name__}")


def _centred(x, name: str, work=torch.float64) -> torch.Tensor:
    """(n, ...) -> centred (n, d) features in `work` precision (float64 by default; float64 input
    always stays float64); raise if constant or non-finite. Rescaled to max |value| = 1 only when
    the values are extreme (CKA is scale invariant; this just keeps squares in range). Few passes
    over the data on purpose: on large conv features this step is memory-bound."""
    t = as_tensor(x)
    if t.dim() < 1:
        raise ValueError(f"stage {name!r}: features must be (n, ...), got a scalar")
    n = t.shape[0]
    if n < 2:
        raise ValueError(f"stage {name!r}: CKA needs at least 2 samples; got n={n}")
    if t.dtype == torch.float64:
        work = torch.float64
    t = t.reshape(n, -1)
    if t.dtype != work:
        t = t.to(work)
    mean = t.mean(0, keepdim=True)
    xc = t - mean
    spread = torch.linalg.vector_norm(xc, ord=float("inf"))
    if not torch.isfinite(spread):
        raise ValueError(f"stage {name!r}: features contain NaN or inf")
    level = torch.linalg.vector_norm(mean, ord=float("inf")) if mean.numel() else spread
    tol = _CONST_RTOL if work == torch.float64 else 1e-6
    if spread == 0 or spread <= tol * level:
        raise ValueError(f"stage {name!r}: features are constant over the {n} samples; "
                         "CKA is undefined for a constant representation")
    if not 1e-8 <= float(spread) <= 1e8:
        xc.div_(spread)
    return xc


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


def _centre_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T/n."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _cosine(kc: torch.Tensor, lc: torch.Tensor) -> float:
    num = (kc * lc).sum()
    den = torch.linalg.vector_norm(kc) * torch.linalg.vector_norm(lc)
    return float((num / den).clamp(-1.0, 1.0))


def _check_n(x, y):
    nx, ny = as_tensor(x).shape[0], as_tensor(y).shape[0]
    if nx != ny:
        raise ValueError(f"CKA compares the same samples: got n={nx} and n={ny}")


# ----------------------------------------------------------------------------------- linear / rbf
def linear_cka(x, y) -> float:
    """Linear CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), float64, exact.

    Uses the feature-space form when both dims are below n, the Gram (n x n) form otherwise.
    """
    _check_n(x, y)
    xc, yc = _centred(x, "x"), _centred(y, "y")
    xc, yc = xc / torch.linalg.vector_norm(xc), yc / torch.linalg.vector_norm(yc)
    n, dx, dy = xc.shape[0], xc.shape[1], yc.shape[1]
    if dx * dy + dx * dx + dy * dy < n * (dx + dy):
        num = torch.linalg.matrix_norm(yc.T @ xc) ** 2
        den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
        return float((num / den).clamp(-1.0, 1.0))
    return _cosine(xc @ xc.T, yc @ yc.T)


def _rbf_gram(xc: torch.Tensor, sigma_frac: float, name: str) -> torch.Tensor:
    sq = (xc * xc).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    n = d2.shape[0]
    off = d2[~torch.eye(n, dtype=torch.bool)]
    med = off.median()
    if med <= 0:
        raise ValueError(f"stage {name!r}: median pairwise distance is 0 (most samples identical); "
                         "the RBF bandwidth is undefined")
    sigma2 = (sigma_frac ** 2) * med           # sigma = sigma_frac * median distance
    return torch.exp(-d2 / (2.0 * sigma2))


def rbf_cka(x, y, sigma_frac: float = 0.8) -> float:
    """RBF-kernel CKA; bandwidth sigma = sigma_frac x the median pairwise Euclidean distance
    (per representation), as in Kornblith et al. 2019."""
    _check_n(x, y)
    if sigma_frac <= 0:
        raise ValueError("sigma_frac must be > 0")
    k = _rbf_gram(_centred(x, "x"), sigma_frac, "x")
    l = _rbf_gram(_centred(y, "y"), sigma_frac, "y")
    return _cosine(_centre_gram(k), _centre_gram(l))


# ----------------------------------------------------------------------------------- minibatch
def _check_batch(n: int):
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples per batch; got n={n}")


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased HSIC_1 (Song et al. 2012) of two (n, n) kernel matrices, n >= 4."""
    n = k.shape[0]
    _check_batch(n)
    k = k.to(torch.float64).clone().fill_diagonal_(0.0)
    l = l.to(torch.float64).clone().fill_diagonal_(0.0)
    v = ((k * l).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2))
         - 2.0 / (n - 2) * (k.sum(0) @ l.sum(0)))
    return float(v / (n * (n - 3)))


def _sample_count(*feats: Mapping, who: str) -> int:
    """The number of samples every stage of every feature dict holds; ValueError naming the sizes if
    they differ (CKA compares representations of the same samples)."""
    ns = {as_tensor(v).shape[0] for f in feats for v in f.values()}
    if not ns:
        raise ValueError(f"{who}: no stages given")
    if len(ns) != 1:
        raise ValueError(f"{who}: every stage must hold the same samples; got sizes {sorted(ns)}")
    return ns.pop()


class CKAAccumulator:
    """Minibatch linear CKA (Nguyen et al. 2021) for every (a-stage, b-stage) pair.

        acc = CKAAccumulator()
        for xb in batches:
            acc.update(features_a_of(xb), features_b_of(xb))   # dicts name -> (n, ...) tensors
        acc.result()   # DataFrame, rows a's stages, cols b's stages

    CKA = sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) * sum_i HSIC_1(L_i, L_i)), with the
    unbiased estimator, so it converges to the population CKA as batches accumulate (unlike the
    average of per-batch biased CKAs). Each batch needs n >= 4.
    """

    def __init__(self):
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self._ab = self._aa = self._bb = None
        self._scale: dict[tuple[str, str], float] = {}
        self.batches = 0
        self.samples = 0

    def _stats(self, feats: dict, side: str):
        """Per stage: zero-diagonal linear Gram (flattened), its column sums and total."""
        flat, col, tot = [], [], []
        for name, f in feats.items():
            t = as_tensor(f).reshape(as_tensor(f).shape[0], -1).to(torch.float64)
            if not torch.isfinite(t).all():
                raise ValueError(f"stage {name!r}: features contain NaN or inf")
            t = t - t.mean(0, keepdim=True)    # HSIC_1 is invariant to this; it helps rounding
            key = (side, name)
            if key not in self._scale:         # one fixed scale per stage, so batches weigh alike
                s = float(torch.linalg.vector_norm(t))
                self._scale[key] = 1.0 / s if s > 0 else 1.0
            t = t * self._scale[key]
            k = (t @ t.T).fill_diagonal_(0.0)
            flat.append(k.reshape(-1))
            cs = k.sum(0)
            col.append(cs)
            tot.append(cs.sum())
        return torch.stack(flat), torch.stack(col), torch.stack(tot)

    @staticmethod
    def _hsic(fa, ca, ta, fb, cb, tb, n):
        v = fa @ fb.T + torch.outer(ta, tb) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ca @ cb.T)
        return v / (n * (n - 3))

    def update(self, feats_a, feats_b=None) -> "CKAAccumulator":
        fa = stage_features(feats_a)
        fb = fa if feats_b is None else stage_features(feats_b)
        n = _sample_count(fa, fb, who="CKAAccumulator.update (one batch)")
        _check_batch(n)
        if self.names_a is None:
            self.names_a, self.names_b = list(fa), list(fb)
        elif list(fa) != self.names_a or list(fb) != self.names_b:
            raise ValueError("stage names changed between batches")
        sa = self._stats(fa, "a")
        sb = sa if feats_b is None else self._stats(fb, "b")
        ab = self._hsic(*sa, *sb, n)
        aa = torch.diagonal(self._hsic(*sa, *sa, n))
        bb = torch.diagonal(self._hsic(*sb, *sb, n))
        if self._ab is None:
            self._ab, self._aa, self._bb = ab, aa, bb
        else:
            self._ab += ab
            self._aa += aa
            self._bb += bb
        self.batches += 1
        self.samples += n
        return self

    def result(self) -> pd.DataFrame:
        if self._ab is None:
            raise ValueError("CKAAccumulator.result(): no batches were added")
        for names, self_h in ((self.names_a, self._aa), (self.names_b, self._bb)):
            for name, h in zip(names, self_h.tolist()):
                if not h > 0:
                    raise ValueError(f"stage {name!r}: its features are constant (HSIC estimate {h:.3g} <= 0); "
                                     "CKA is undefined")
        m = self._ab / torch.sqrt(torch.outer(self._aa, self._bb))
        return pd.DataFrame(m.numpy(), index=pd.Index(self.names_a, name="a"),
                            columns=pd.Index(self.names_b, name="b"))


def _batches(n: int, batch_size: int) -> list[slice]:
    """Split range(n) into ceil(n / batch_size) near-equal contiguous chunks (none smaller than 4
    when n >= 4), so a short tail batch never trips the n >= 4 rule."""
    _check_batch(n)
    k = max(1, min(math.ceil(n / batch_size), n // 4))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def minibatch_cka(x, y, batch_size: int = 256) -> float:
    """Minibatch (unbiased-HSIC) linear CKA of two (n, ...) representations split into batches."""
    _check_n(x, y)
    x, y = as_tensor(x), as_tensor(y)
    if x.shape[0] < 4:
        _check_batch(x.shape[0])
    acc = CKAAccumulator()
    for sl in _batches(x.shape[0], batch_size):
        acc.update({"x": x[sl]}, {"y": y[sl]})
    return float(acc.result().iloc[0, 0])


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
    ~batch_size; see CKAAccumulator). gram_dtype: see the module docstring (float32 default;
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


# ----------------------------------------------------------------------------------- over epochs
def _match_stages(n_s: int, n_t: int) -> list[tuple[int, int]]:
    """Pair student stage i with the teacher stage at the same relative depth."""
    if n_s == n_t:
        return [(i, i) for i in range(n_s)]
    if n_s == 1:
        return [(0, n_t - 1)]
    return [(i, round(i * (n_t - 1) / (n_s - 1))) for i in range(n_s)]


def _load_probes(probes) -> list[dict]:
    from .probes import list_probes, load_probe
    if isinstance(probes, (str, Path)):
        found = list_probes(probes)
        if not found:
            raise ValueError(f"no probe_epoch*.pt files under {probes}")
        return [load_probe(p) for _, p in found]
    return [load_probe(p) if isinstance(p, (str, Path)) else p for p in probes]


def cka_over_epochs(probes, kind: str = "linear", pairs=None, against: str = "teacher",
                    errors: str = "raise") -> pd.DataFrame:
    """CKA of matched stages at every probe epoch -> long DataFrame.

    probes: a run directory, probe file paths, or loaded probe dicts (see probes.py).
    against="teacher": student stage vs its matched teacher stage (pairs: list of
      (student_stage_name_or_index, teacher_stage_name_or_index); default: same index when both
      have the same number of stages, otherwise the teacher stage at the same relative depth).
    against="final": each student stage vs the same stage at the last probe epoch (convergence).
    errors="nan" records NaN for undefined values (a constant stage) instead of raising.
    Columns: epoch, student_stage, other_stage, pair, against, cka.
    """
    if against not in ("teacher", "final"):
        raise ValueError("against must be 'teacher' or 'final'")
    if errors not in ("raise", "nan"):
        raise ValueError("errors must be 'raise' or 'nan'")
    if kind not in ("linear", "rbf", "minibatch"):
        raise ValueError(f"kind must be 'linear', 'rbf' or 'minibatch', got {kind!r}")
    loaded = sorted(_load_probes(probes), key=lambda p: int(p["epoch"]))
    if not loaded:
        raise ValueError("cka_over_epochs: no probes")
    final = loaded[-1]
    cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None, str]] = {}

    def gram(side: str, name: str, feats) -> torch.Tensor | None:
        """One stage's unit Gram, reused while its features are unchanged (a frozen teacher's are
        the same at every epoch); None (with errors="nan") when CKA is undefined for it."""
        t = as_tensor(feats)
        hit = cache.get((side, name))
        if hit is not None and hit[0].shape == t.shape and torch.equal(hit[0], t):
            g, msg = hit[1], hit[2]
        else:
            try:
                g, msg = stage_grams({name: t}, kind).grams[0], ""
            except ValueError as e:
                g, msg = None, str(e)
            cache[(side, name)] = (t, g, msg)
        if g is None and errors == "raise":
            raise ValueError(msg)
        return g

    rows = []
    for pr in loaded:
        s = stage_features(pr["student"])
        if against == "teacher":
            o, o_side = stage_features(pr["teacher"]), "teacher"
        else:
            if not torch.equal(as_tensor(pr["index"]), as_tensor(final["index"])):
                raise ValueError(f"epoch {pr['epoch']}: probe samples differ from the final epoch's")
            o, o_side = stage_features(final["student"]), "final"
        s_names, o_names = list(s), list(o)
        if pairs is None:
            use = [(s_names[i], o_names[j]) for i, j in _match_stages(len(s_names), len(o_names))] \
                if against == "teacher" else [(n, n) for n in s_names]
        else:
            use = [(a if isinstance(a, str) else s_names[a], b if isinstance(b, str) else o_names[b])
                   for a, b in pairs]
        for a, b in use:
            if kind == "minibatch":
                try:
                    v = minibatch_cka(s[a], o[b])
                except ValueError:
                    if errors == "raise":
                        raise
                    v = float("nan")
            else:
                ga, gb = gram("student", a, s[a]), gram(o_side, b, o[b])
                if ga is not None and gb is not None and ga.shape != gb.shape:
                    raise ValueError(f"epoch {pr['epoch']}: {a!r} and {b!r} hold different numbers of samples")
                v = float("nan") if ga is None or gb is None else float((ga @ gb).clamp(-1.0, 1.0))
            rows.append({"epoch": int(pr["epoch"]), "student_stage": a, "other_stage": b,
                         "pair": f"{a} ↔ {b}", "against": against, "cka": v})
    return pd.DataFrame(rows, columns=["epoch", "student_stage", "other_stage", "pair", "against", "cka"])
