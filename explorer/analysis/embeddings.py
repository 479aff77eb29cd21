"""2-D projections of teacher and student embeddings of the same samples."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from ._util import as_numpy, labels_numpy

__all__ = ["project", "tsne_perplexity"]


def tsne_perplexity(n: int, perplexity: float = 30.0) -> float:
    """Perplexity capped for small n: at most (n - 1) / 3 (sklearn requires perplexity < n), at
    least 1."""
    return float(max(1.0, min(perplexity, (n - 1) / 3.0)))


def _project_one(e: np.ndarray, method: str, seed: int, perplexity: float) -> np.ndarray:
    n = e.shape[0]
    if method == "pca":
        k = min(2, n, e.shape[1])
        out = PCA(n_components=k, random_state=seed).fit_transform(e)
    elif method == "tsne":
        out = TSNE(n_components=2, perplexity=tsne_perplexity(n, perplexity), init="pca",
                   learning_rate="auto", random_state=seed).fit_transform(e)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if out.shape[1] < 2:                              # 1-D embeddings: pad so the plot still works
        out = np.concatenate([out, np.zeros((n, 2 - out.shape[1]))], axis=1)
    return out


def _procrustes(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate/reflect src (centred) to best match ref (orthogonal Procrustes); no scaling."""
    a, b = src - src.mean(0), ref - ref.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    return a @ (u @ vt)


def project(emb_t, emb_s, y, method: str = "pca", seed: int = 0, index=None,
            perplexity: float = 30.0, align: bool = True,
            names: tuple[str, str] = ("teacher", "student")) -> pd.DataFrame:
    """Project both models' (n, D) embeddings to 2-D -> long DataFrame (model, x, y, label, index).

    The projection is fitted separately per model (their dimensions differ): PCA, or t-SNE with
    init="pca", seeded, perplexity capped to (n-1)/3 for small n. Separate fits leave the axes
    arbitrary (PCA sign flips, t-SNE rotations), so with align=True the student's 2-D points are
    rotated/reflected (orthogonal Procrustes over the shared samples, no scaling) onto the
    teacher's, which makes side-by-side plots comparable without changing any distances.
    """
    et = as_numpy(emb_t, np.float64)
    es = as_numpy(emb_s, np.float64)
    et, es = et.reshape(et.shape[0], -1), es.reshape(es.shape[0], -1)
    lab = labels_numpy(y)
    if not (et.shape[0] == es.shape[0] == lab.size):
        raise ValueError(f"project: teacher has {et.shape[0]} rows, student {es.shape[0]}, labels {lab.size}")
    n = et.shape[0]
    if n < 3:
        raise ValueError(f"project needs at least 3 samples; got n={n}")
    idx = np.arange(n) if index is None else as_numpy(index).reshape(-1)
    pt = _project_one(et, method, seed, perplexity)
    ps = _project_one(es, method, seed, perplexity)
    if align:
        pt = pt - pt.mean(0)
        ps = _procrustes(ps, pt)
    frames = [pd.DataFrame({"model": name, "x": p[:, 0], "y": p[:, 1], "label": lab, "index": idx})
              for name, p in zip(names, (pt, ps))]
    return pd.concat(frames, ignore_index=True)
