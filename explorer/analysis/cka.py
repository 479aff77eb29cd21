"""Centred kernel alignment between two representations of the same samples.

Linear and RBF CKA follow Kornblith et al. 2019 ("Similarity of Neural Network Representations
Revisited"); minibatch CKA follows Nguyen et al. 2021 ("Do Wide and Deep Networks Learn the Same
Things?"), using the unbiased HSIC estimator of Song et al. 2012 summed over minibatches.
Every stage against every stage (cached Gram matrices) is cka_stages.py; CKA over a run's probe
epochs is cka_epochs.py.

Conventions
- Features are (n, ...) tensors or arrays, flattened per sample to (n, d).
- linear_cka / rbf_cka / minibatch CKA are float64 throughout (features centred in float64;
  CKA is invariant to isotropic scaling, and extreme values are rescaled before squaring, so
  features of scale 1e-6 and 1e6 give the same, finite value).
- A stage whose features are constant over the samples has no centred Gram matrix, so CKA is
  undefined: we raise ValueError naming the stage rather than returning a silent 0 or NaN.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ._util import as_tensor

__all__ = ["linear_cka", "rbf_cka", "minibatch_cka", "CKAAccumulator", "stage_features", "hsic_unbiased"]

_CONST_RTOL = 1e-12   # relative spread below which float64 features count as constant


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
