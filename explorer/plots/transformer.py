"""A transformer's own attention over the image: each block's class-token attention per head, and the attention
rollout (Abnar & Zuidema 2020) of teacher and student side by side, beside a CNN's activation attention and
Grad-CAM for CNN <-> ViT pairs.

Maps are (h, w) arrays on the patch grid; each is stretched to [0, 1] (its minimum to its maximum) and drawn with the attention
pages' conventions (explorer.plots.attention: the Turbo scale on a fixed 0-1 range, the map opaque with the
input's outline as white contour lines, nearest-neighbour upsampling to the image).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import ATTENTION, finish, image_axes, to_display_image
from .attention import _arr, _fit, _overlay

__all__ = ["unit_range", "cls_attention_figure", "maps_row_figure"]


def unit_range(m) -> np.ndarray:
    """A map stretched to [0, 1]: 0 its minimum, 1 its maximum (a constant map becomes zeros). Rollout is close
    to uniform (each block keeps half its identity), so scaling to the maximum alone left every patch near 1."""
    a = np.nan_to_num(_arr(m).astype(float))
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _colorbar(fig: go.Figure, title: str = "attention") -> None:
    fig.update_layout(coloraxis=dict(colorscale=ATTENTION, cmin=0.0, cmax=1.0, colorbar=dict(title=title)))


def cls_attention_figure(image, cls_att, mean=None, std=None, opacity: float = 0.8,
                         title: str | None = "Class-token attention, block × head") -> go.Figure:
    """One sample's class-token attention as a grid: one row per block (first at the top), one column per
    head. cls_att: (blocks, heads, h, w), a probe's "cls_attention" row. Each head's map stretched to [0, 1]."""
    a = np.asarray(cls_att.float().numpy() if hasattr(cls_att, "float") else cls_att, dtype=float)
    if a.ndim != 4:
        raise ValueError(f"cls_attention_figure: expected (blocks, heads, h, w); got shape {a.shape}")
    blocks, heads = a.shape[:2]
    img = to_display_image(image, mean, std)
    hw = img.shape[:2]
    fig = make_subplots(rows=blocks, cols=heads, column_titles=[f"head {h + 1}" for h in range(heads)],
                        horizontal_spacing=0.02, vertical_spacing=0.03)
    fig.update_annotations(font_size=12)
    for b in range(blocks):
        for h in range(heads):
            _overlay(fig, img, _fit(unit_range(a[b, h]), hw), b + 1, h + 1, opacity, f"block {b + 1} · head {h + 1}")
        fig.update_yaxes(title_text=f"block {b + 1}", title_font_size=12, row=b + 1, col=1)
    _colorbar(fig)
    return finish(fig, title, height=150 * blocks + 110, width=max(360, 150 * heads + 200))


def maps_row_figure(image, panels: Sequence[tuple[str, object]], mean=None, std=None, opacity: float = 0.8,
                    scores: Sequence[float | None] | None = None,
                    title: str | None = "Attention rollout, teacher and student") -> go.Figure:
    """One sample, one row: the input, then each (label, (h, w) map) over it, each stretched to [0, 1].
    scores: optional per-panel numbers (e.g. the fraction inside the object mask), shown under the label."""
    img = to_display_image(image, mean, std)
    hw = img.shape[:2]
    titles = ["input"]
    for i, (label, _) in enumerate(panels):
        s = scores[i] if scores is not None and i < len(scores) else None
        titles.append(str(label) + ("" if s is None or not np.isfinite(s) else f"<br>inside object {s:.2f}"))
    cols = len(panels) + 1
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.02)
    fig.update_annotations(font_size=12)
    fig.add_trace(go.Image(z=img, name="input"), row=1, col=1)
    image_axes(fig, 1, 1)
    for c, (label, m) in enumerate(panels):
        _overlay(fig, img, _fit(unit_range(m), hw), 1, c + 2, opacity, str(label).replace("<br>", " "))
    _colorbar(fig)
    return finish(fig, title, height=330, width=max(480, 190 * cols + 120))
