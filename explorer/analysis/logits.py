"""What the outputs say: softened distributions, agreement, calibration, disagreements.

Inputs are (N, C) logits and (N,) integer labels (tensors or arrays); outputs are numpy arrays,
floats or pandas DataFrames. Probabilities are computed in float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix

from ._util import as_numpy, as_tensor, labels_numpy

__all__ = ["soften", "agreement", "per_class_accuracy", "confusion", "calibration",
           "per_sample_kl", "disagreements"]


def _logits(z, name="logits") -> torch.Tensor:
    t = as_tensor(z).to(torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must be (N, C); got shape {tuple(t.shape)}")
    return t


def _pair(t_logits, s_logits):
    t, s = _logits(t_logits, "teacher logits"), _logits(s_logits, "student logits")
    if t.shape != s.shape:
        raise ValueError(f"teacher and student logits differ in shape: {tuple(t.shape)} vs {tuple(s.shape)}")
    return t, s


def soften(logits, T: float = 1.0) -> np.ndarray:
    """softmax(logits / T), float64. Works on (C,) or (N, C)."""
    if T <= 0:
        raise ValueError("temperature must be > 0")
    z = as_tensor(logits).to(torch.float64)
    return torch.softmax(z / T, dim=-1).numpy()


def agreement(t_logits, s_logits) -> float:
    """Fraction of samples whose top-1 predictions agree."""
    t, s = _pair(t_logits, s_logits)
    if t.shape[0] == 0:
        return float("nan")
    return float((t.argmax(1) == s.argmax(1)).double().mean())


def per_class_accuracy(logits, y, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Columns: class_index, class, count, correct, accuracy (NaN for a class without samples)."""
    z = _logits(logits)
    y = labels_numpy(y)
    c = z.shape[1] if classes is None else len(classes)
    names = [str(k) for k in range(c)] if classes is None else [str(n) for n in classes]
    pred = z.argmax(1).numpy()
    count = np.bincount(y, minlength=c)[:c]
    correct = np.bincount(y[pred == y], minlength=c)[:c]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    return pd.DataFrame({"class_index": np.arange(c), "class": names, "count": count,
                         "correct": correct, "accuracy": acc})


def confusion(logits, y, num_classes: int | None = None, normalize: str | None = None) -> np.ndarray:
    """(C, C) confusion matrix, rows = true class, cols = predicted (sklearn's convention).
    normalize: None (counts), "true" (rows sum to 1), "pred" or "all"."""
    z = _logits(logits)
    c = num_classes or z.shape[1]
    return confusion_matrix(labels_numpy(y), z.argmax(1).numpy(), labels=np.arange(c), normalize=normalize)


def calibration(logits, y, n_bins: int = 15) -> tuple[float, pd.DataFrame]:
    """Expected calibration error (Guo et al. 2017) with n_bins equal-width confidence bins on
    (0, 1] (top-1 confidence, right-closed bins): ECE = sum_b (count_b / N) |acc_b - conf_b|.
    Returns (ece, DataFrame per bin: bin, lower, upper, confidence, accuracy, count, gap), where
    confidence/accuracy are NaN for empty bins."""
    z = _logits(logits)
    y = labels_numpy(y)
    if z.shape[0] != y.size:
        raise ValueError(f"calibration: {z.shape[0]} logits but {y.size} labels")
    p = torch.softmax(z, dim=1)
    conf, pred = p.max(1)
    conf, correct = conf.numpy(), (pred.numpy() == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, weights=conf, minlength=n_bins)
    s_acc = np.bincount(b, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(count > 0, s_conf / np.maximum(count, 1), np.nan)
        ma = np.where(count > 0, s_acc / np.maximum(count, 1), np.nan)
    n = max(int(count.sum()), 1)
    ece = float(np.nansum(count / n * np.abs(ma - mc)))
    df = pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:],
                       "confidence": mc, "accuracy": ma, "count": count, "gap": ma - mc})
    return ece, df


def per_sample_kl(t_logits, s_logits, T: float = 1.0) -> np.ndarray:
    """KL(p_t^T || p_s^T) per sample, in nats, float64, NOT multiplied by T^2."""
    if T <= 0:
        raise ValueError("temperature must be > 0")
    t, s = _pair(t_logits, s_logits)
    lt = torch.log_softmax(t / T, dim=1)
    ls = torch.log_softmax(s / T, dim=1)
    return (lt.exp() * (lt - ls)).sum(1).clamp_min(0.0).numpy()


def disagreements(t_logits, s_logits, y, k: int = 16, T: float = 1.0, index=None) -> pd.DataFrame:
    """The k samples where teacher and student differ most.

    Ranked first by whether their top-1 predictions differ (disagreements first), then by
    per-sample KL(p_t^T || p_s^T), largest first. Columns: position (row in the inputs), index
    (dataset index, = position unless given), label, teacher_pred, student_pred, teacher_conf,
    student_conf (top-1 probabilities at T=1), kl, disagree.
    """
    t, s = _pair(t_logits, s_logits)
    y = labels_numpy(y)
    n = t.shape[0]
    if y.size != n:
        raise ValueError(f"disagreements: {n} logits but {y.size} labels")
    kl = per_sample_kl(t, s, T)
    pt, ps = torch.softmax(t, 1), torch.softmax(s, 1)
    tc, tp = pt.max(1)
    sc, sp = ps.max(1)
    dis = (tp != sp).numpy()
    idx = np.arange(n) if index is None else as_numpy(index).reshape(-1)
    order = np.lexsort((-kl, ~dis))[:k]        # last key is primary: disagreements first, then by KL
    return pd.DataFrame({
        "position": order, "index": idx[order], "label": y[order],
        "teacher_pred": tp.numpy()[order], "student_pred": sp.numpy()[order],
        "teacher_conf": tc.numpy()[order], "student_conf": sc.numpy()[order],
        "kl": kl[order], "disagree": dis[order],
    }).reset_index(drop=True)
