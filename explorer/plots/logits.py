"""What the outputs say: soft targets, confusion, calibration, per-class accuracy, disagreements."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.logits import soften
from ._style import (DIVERGING, SEQUENTIAL, finish, image_axes, model_color, symmetric_limit,
                     to_display_image)

__all__ = ["softened_bars", "confusion_heatmaps", "reliability_diagram", "per_class_accuracy_bars",
           "disagreement_gallery"]


def _names(classes, c):
    return [str(k) for k in (classes if classes is not None else range(c))]


def softened_bars(t_logits, s_logits, temperatures: Sequence[float] = (1.0, 4.0),
                  classes: Sequence[str] | None = None, label: int | None = None,
                  names: tuple[str, str] = ("teacher", "student"), title: str | None = None) -> go.Figure:
    """One sample's softened distributions softmax(z / T): one row per temperature, teacher and
    student bars side by side. The true class (label) is marked in the x tick text."""
    zt = np.asarray(t_logits.detach().cpu() if hasattr(t_logits, "detach") else t_logits, dtype=float).reshape(-1)
    zs = np.asarray(s_logits.detach().cpu() if hasattr(s_logits, "detach") else s_logits, dtype=float).reshape(-1)
    if zt.shape != zs.shape:
        raise ValueError(f"softened_bars: logits differ in shape {zt.shape} vs {zs.shape}")
    cls = _names(classes, zt.size)
    if label is not None:
        cls[int(label)] = f"<b>{cls[int(label)]} ✓</b>"
    temps = list(temperatures)
    fig = make_subplots(rows=len(temps), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[f"T = {t:g}" for t in temps])
    for r, T in enumerate(temps):
        for i, (z, nm) in enumerate(((zt, names[0]), (zs, names[1]))):
            fig.add_trace(go.Bar(x=cls, y=soften(z, T), name=nm, marker_color=model_color(nm, i),
                                 legendgroup=nm, showlegend=r == 0,
                                 hovertemplate=f"{nm}, T={T:g}<br>%{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=r + 1, col=1)
        fig.update_yaxes(title_text="probability", range=[0, 1], row=r + 1, col=1)
    fig.update_xaxes(title_text="class", row=len(temps), col=1)
    fig.update_layout(barmode="group")
    return finish(fig, title or "Softened output distributions", height=220 * len(temps) + 120)


def confusion_heatmaps(cms: Mapping[str, np.ndarray], classes: Sequence[str] | None = None,
                       show_difference: bool = False, title: str | None = None) -> go.Figure:
    """Side-by-side confusion matrices (rows true, cols predicted), one per model, as given
    (counts or row-normalised; analysis.confusion). With two models and show_difference, a third
    panel shows second − first on a diverging scale."""
    items = [(str(k), np.asarray(v, dtype=float)) for k, v in cms.items()]
    if not items:
        raise ValueError("confusion_heatmaps: no matrices")
    c = items[0][1].shape[0]
    cls = _names(classes, c)
    panels = list(items)
    diff = None
    if show_difference:
        if len(items) != 2:
            raise ValueError("show_difference needs exactly two matrices")
        diff = (f"{items[1][0]} − {items[0][0]}", items[1][1] - items[0][1])
    n = len(panels) + (diff is not None)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[p[0] for p in panels] + ([diff[0]] if diff else []),
                        horizontal_spacing=0.08)
    normalised = all(np.nanmax(m) <= 1.0 + 1e-9 for _, m in items)
    fmt = ".2f" if normalised else ".0f"
    hi = max(float(np.nanmax(m)) for _, m in items) if items else 1.0
    for i, (nm, m) in enumerate(panels):
        fig.add_trace(go.Heatmap(z=m, x=cls, y=cls, coloraxis="coloraxis", name=nm, texttemplate=f"%{{z:{fmt}}}",
                                 hovertemplate=f"{nm}<br>true %{{y}}<br>predicted %{{x}}<br>%{{z:{fmt}}}<extra></extra>"),
                      row=1, col=i + 1)
    if diff:
        fig.add_trace(go.Heatmap(z=diff[1], x=cls, y=cls, coloraxis="coloraxis2", name=diff[0],
                                 texttemplate=f"%{{z:+{fmt}}}",
                                 hovertemplate=f"{diff[0]}<br>true %{{y}}<br>predicted %{{x}}<br>%{{z:+{fmt}}}<extra></extra>"),
                      row=1, col=n)
        lim = symmetric_limit(diff[1])
        fig.update_layout(coloraxis2=dict(colorscale=DIVERGING, cmin=-lim, cmax=lim, cmid=0,
                                          colorbar=dict(title="Δ", x=1.1)))
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=hi,
                                     colorbar=dict(title="rate" if normalised else "count", x=1.0)))
    for i in range(1, n + 1):
        fig.update_xaxes(title_text="predicted", type="category", row=1, col=i)
        fig.update_yaxes(title_text="true" if i == 1 else None, type="category", autorange="reversed", row=1, col=i)
    return finish(fig, title or "Confusion matrices", height=max(420, 32 * c + 200))


def reliability_diagram(calibrations, name: str = "model", title: str | None = None) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin (bars) against the diagonal of perfect
    calibration, and bin counts below. calibrations: {name: (ece, bins_df)} from
    analysis.calibration, or one (ece, bins_df). Each model's ECE is in the title and legend."""
    if isinstance(calibrations, tuple):
        calibrations = {name: calibrations}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="black", dash="dash", width=1)), row=1, col=1)
    parts = []
    for i, (nm, (ece, df)) in enumerate(calibrations.items()):
        col = model_color(nm, i)
        centres = (df["lower"] + df["upper"]) / 2
        width = (df["upper"] - df["lower"]) / max(len(calibrations), 1)
        offs = (i - (len(calibrations) - 1) / 2) * width
        fig.add_trace(go.Bar(x=centres + offs, y=df["accuracy"], width=width, name=f"{nm} (ECE {ece:.3f})",
                             marker_color=col, opacity=0.75, legendgroup=nm, customdata=np.stack(
                                 [df["confidence"], df["count"]], axis=1),
                             hovertemplate=f"{nm}<br>accuracy %{{y:.3f}}<br>mean confidence %{{customdata[0]:.3f}}"
                                           f"<br>%{{customdata[1]}} samples<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Bar(x=centres + offs, y=df["count"], width=width, name=f"{nm} count", marker_color=col,
                             opacity=0.75, legendgroup=nm, showlegend=False,
                             hovertemplate=f"{nm}<br>%{{y}} samples<extra></extra>"), row=2, col=1)
        parts.append(f"{nm} ECE {ece:.3f}")
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="confidence (top-1 probability)", range=[0, 1], row=2, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="count", row=2, col=1)
    fig.update_layout(barmode="overlay", bargap=0)
    return finish(fig, title or ("Reliability diagram — " + " · ".join(parts)), height=520)


def per_class_accuracy_bars(dfs: Mapping[str, pd.DataFrame], title: str | None = None) -> go.Figure:
    """Grouped bars of per-class accuracy, one bar trace per model (analysis.per_class_accuracy)."""
    fig = go.Figure()
    for i, (nm, df) in enumerate(dfs.items()):
        fig.add_trace(go.Bar(x=[str(c) for c in df["class"]], y=df["accuracy"], name=str(nm),
                             marker_color=model_color(nm, i), customdata=np.stack([df["correct"], df["count"]], 1),
                             hovertemplate=f"{nm}<br>%{{x}}: %{{y:.3f}} (%{{customdata[0]}}/%{{customdata[1]}})"
                                           "<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="accuracy", range=[0, 1])
    return finish(fig, title or "Per-class accuracy", height=400)


def disagreement_gallery(images, df: pd.DataFrame, classes: Sequence[str] | None = None, cols: int = 4,
                         mean=None, std=None, title: str | None = None) -> go.Figure:
    """Grid of the samples where teacher and student disagree most (analysis.disagreements):
    images[df.position[i]] with "true · T: pred (conf) · S: pred (conf) · KL" as each cell's title.
    images: (N, C, H, W) or (N, H, W, C), normalised with mean/std or display-ready."""
    k = len(df)
    if k == 0:
        fig = go.Figure()
        fig.add_annotation(text="teacher and student agree on every sample", showarrow=False)
        return finish(fig, title or "Disagreements", height=200)
    rows = math.ceil(k / cols)
    name = (lambda c: str(classes[int(c)])) if classes is not None else (lambda c: str(int(c)))
    titles = [f"#{r['index']} {name(r['label'])}<br>T: {name(r['teacher_pred'])} ({r['teacher_conf']:.2f}) · "
              f"S: {name(r['student_pred'])} ({r['student_conf']:.2f})<br>KL {r['kl']:.2f}"
              for _, r in df.iterrows()]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=min(0.12, 0.5 / rows) if rows > 1 else 0.0)
    for i, (_, r) in enumerate(df.iterrows()):
        rr, cc = i // cols + 1, i % cols + 1
        fig.add_trace(go.Image(z=to_display_image(images[int(r["position"])], mean, std), name=f"#{r['index']}"),
                      row=rr, col=cc)
        image_axes(fig, rr, cc)
    fig.update_annotations(font_size=11)
    fig = finish(fig, title or "Where teacher and student disagree most", height=230 * rows + 120)
    fig.update_layout(margin_t=120)       # the first row's three-line titles sit below the figure's title
    return fig
