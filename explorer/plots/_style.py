"""Shared styling for every figure builder: one template, one set of colour conventions.

- sequential values (CKA, probabilities, attention) : Viridis / Turbo on a fixed range where the
  quantity has one (CKA 0-1, attention 0-1), so figures are comparable across runs
- differences (student - teacher)                   : RdBu_r centred at 0 on a symmetric range
- teacher is always blue, student red, a baseline (student trained alone) grey
"""
from __future__ import annotations

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

TEMPLATE = "plotly_white"
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13)
SEQUENTIAL = "Viridis"
ATTENTION = "Turbo"
DIVERGING = "RdBu_r"
TEACHER = "#1f77b4"
STUDENT = "#d62728"
BASELINE = "#7f7f7f"
MODEL_COLORS = {"teacher": TEACHER, "student": STUDENT, "baseline": BASELINE, "student alone": BASELINE,
                "distilled": STUDENT}


def model_color(name: str, i: int = 0) -> str:
    key = str(name).lower()
    if key in MODEL_COLORS:
        return MODEL_COLORS[key]
    return pc.qualitative.D3[i % len(pc.qualitative.D3)]


def class_colors(n: int) -> list[str]:
    """n distinguishable colours: Plotly's 10, then Alphabet's 26, then samples of Turbo."""
    if n <= 10:
        return list(pc.qualitative.Plotly[:n])
    if n <= 26:
        return list(pc.qualitative.Alphabet[:n])
    return pc.sample_colorscale("Turbo", [i / max(n - 1, 1) for i in range(n)])


def run_colors(runs) -> dict:
    palette = pc.qualitative.D3 + pc.qualitative.Set2
    return {r: palette[i % len(palette)] for i, r in enumerate(runs)}


def finish(fig: go.Figure, title: str | None = None, height: int | None = None,
           width: int | None = None) -> go.Figure:
    fig.update_layout(template=TEMPLATE, font=FONT, title=dict(text=title or "", x=0.01, xanchor="left"),
                      margin=dict(l=60, r=30, t=70 if title else 40, b=50))
    if height:
        fig.update_layout(height=height)
    if width:
        fig.update_layout(width=width)
    return fig


def symmetric_limit(*arrays, floor: float = 1e-12) -> float:
    """max |value| over arrays (NaN ignored), for a diverging scale centred at 0."""
    vals = [np.nanmax(np.abs(np.asarray(a, dtype=float))) for a in arrays
            if np.asarray(a).size and np.isfinite(np.asarray(a, dtype=float)).any()]
    return float(max(vals + [floor]))


def to_display_image(img, mean=None, std=None) -> np.ndarray:
    """An image as uint8 (H, W, 3) for go.Image.

    img: (C, H, W) or (H, W, C) with C in {1, 3}, or (H, W); a torch tensor or array. With the
    dataset's normalisation mean/std the normalisation is undone first; then uint8 is kept, floats
    in [0, 1] are scaled by 255, and anything else is min-max rescaled.
    """
    a = img.detach().cpu().float().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.transpose(a, (1, 2, 0))              # (C, H, W), the torch layout, wins ties
    elif a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"to_display_image: expected (C, H, W) or (H, W, C) with C in 1 or 3; got {a.shape}")
    if mean is not None and std is not None:
        a = a.astype(np.float64) * np.asarray(std, dtype=float).reshape(1, 1, -1) \
            + np.asarray(mean, dtype=float).reshape(1, 1, -1)
        a = np.clip(a, 0.0, 1.0) * 255.0
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo >= 0 and hi <= 1:
            a = a * 255.0
        elif not (lo >= 0 and hi <= 255):
            a = (a - lo) / (hi - lo if hi > lo else 1.0) * 255.0
    if a.dtype != np.uint8:
        a = np.clip(np.round(np.nan_to_num(a)), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def hide_axes(fig: go.Figure, row=None, col=None):
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=row, col=col)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, row=row, col=col)


def image_axes(fig: go.Figure, row, col):
    """Pixel-grid axes: y downwards, square pixels, no ticks."""
    sp = fig.get_subplot(row, col)
    anchor = sp.xaxis.plotly_name.replace("axis", "")
    fig.update_yaxes(autorange="reversed", scaleanchor=anchor, scaleratio=1, constrain="domain", row=row, col=col)
    fig.update_xaxes(constrain="domain", row=row, col=col)
    hide_axes(fig, row, col)
