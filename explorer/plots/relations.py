"""Relational knowledge: sample-by-sample relation matrices, RKD angles, dark knowledge."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.relations import class_boundaries, sort_by_class
from ._style import DIVERGING, SEQUENTIAL, STUDENT, TEACHER, finish, symmetric_limit

__all__ = ["relation_matrices", "rkd_angle_histogram", "dark_knowledge_heatmap"]

_KIND = {"cosine": "cosine similarity", "distance": "normalised distance"}


def relation_matrices(m_t, m_s, y=None, classes: Sequence[str] | None = None, kind: str = "cosine",
                      gap: dict | None = None, title: str | None = None) -> go.Figure:
    """Teacher | student | student − teacher relation matrices of the same samples.

    With labels y, rows and columns are sorted by class (the same order for all three) and class
    boundaries are drawn as lines, with class names at the block centres. Teacher and student share
    one sequential colour range; the difference is diverging, centred at 0. gap: optional
    analysis.relation_gap result shown in the title.
    """
    t, s = np.asarray(m_t, dtype=float), np.asarray(m_s, dtype=float)
    if t.shape != s.shape or t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"relation_matrices: need two (n, n) matrices of one shape; got {t.shape}, {s.shape}")
    n = t.shape[0]
    bounds, ticks = [], None
    if y is not None:
        t, order = sort_by_class(t, y)
        s, _ = sort_by_class(s, y)
        ys = np.asarray(y).reshape(-1)[order].astype(int)
        bounds = class_boundaries(ys)
        starts = [0] + bounds
        ends = bounds + [n]
        centres = [(a + b - 1) / 2 for a, b in zip(starts, ends)]
        names = [str(classes[ys[a]]) if classes is not None else str(ys[a]) for a in starts]
        ticks = (centres, names)
    d = s - t
    label = _KIND.get(kind, kind)
    fig = make_subplots(rows=1, cols=3, subplot_titles=["teacher", "student", "student − teacher"],
                        horizontal_spacing=0.06)
    off = ~np.eye(n, dtype=bool)
    both = np.concatenate([t[off], s[off]]) if n > 1 else np.array([0.0, 1.0])
    lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
    lim = symmetric_limit(d[off] if n > 1 else d)
    for c, (m, nm) in enumerate(((t, "teacher"), (s, "student"))):
        fig.add_trace(go.Heatmap(z=m, coloraxis="coloraxis", name=nm,
                                 hovertemplate=f"{nm}<br>row %{{y}} · col %{{x}}<br>%{{z:.3f}}<extra></extra>"),
                      row=1, col=c + 1)
    fig.add_trace(go.Heatmap(z=d, coloraxis="coloraxis2", name="student − teacher",
                             hovertemplate="student − teacher<br>row %{y} · col %{x}<br>%{z:+.3f}<extra></extra>"),
                  row=1, col=3)
    # each colour bar beside the panels it scales (the shared one between student and difference), its title
    # upright along the bar: two bars side by side at the right had overlapping titles
    for i, dom in enumerate(_DOMAINS):
        fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain = dom
        fig.layout.annotations[i].x = sum(dom) / 2
    bar = dict(len=0.9, thickness=12, xanchor="left", xpad=4, title=dict(side="right"))
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=lo, cmax=hi,
                                     colorbar=bar | dict(title=dict(text=label, side="right"),
                                                         x=_DOMAINS[1][1] + 0.005)),
                      coloraxis2=dict(colorscale=DIVERGING, cmin=-lim, cmax=lim, cmid=0.0,
                                      colorbar=bar | dict(title=dict(text="difference", side="right"),
                                                          x=_DOMAINS[2][1] + 0.005)))
    for c in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}", constrain="domain",
                         row=1, col=c)
        # one axis title, under the middle panel: three of them ran into each other in a narrow column
        fig.update_xaxes(constrain="domain", row=1, col=c,
                         title_text=("samples" + (", sorted by class" if y is not None else "")) if c == 2 else None)
        if ticks:
            fig.update_xaxes(tickvals=ticks[0], ticktext=ticks[1], tickangle=-45, row=1, col=c)
            fig.update_yaxes(tickvals=ticks[0], ticktext=ticks[1], showticklabels=c == 1, row=1, col=c)
        for b in bounds:
            for xs, ys_ in (((b - 0.5, b - 0.5), (-0.5, n - 0.5)), ((-0.5, n - 0.5), (b - 0.5, b - 0.5))):
                fig.add_shape(type="line", x0=xs[0], x1=xs[1], y0=ys_[0], y1=ys_[1],
                              line=dict(color="white" if c < 3 else "black", width=1), row=1, col=c)
    if title is None:
        title = f"Sample relations ({label})"
        if gap:
            title += f" — Pearson r {gap['pearson']:.3f}, mean |Δ| {gap['mean_abs_diff']:.3f}"
    fig = finish(fig, title, height=440)
    fig.update_layout(margin_r=80)          # room for the difference's colour bar
    return fig


_DOMAINS = ((0.0, 0.26), (0.29, 0.55), (0.70, 0.96))   # teacher | student | (shared bar) | difference


def rkd_angle_histogram(stats_t: dict, stats_s: dict, names: tuple[str, str] = ("teacher", "student"),
                        title: str | None = None) -> go.Figure:
    """Overlaid densities of triplet angle cosines (analysis.rkd_angle_stats results), one bar
    trace per model, with each model's mean and std in the legend."""
    fig = go.Figure()
    for st, nm, col in ((stats_t, names[0], TEACHER), (stats_s, names[1], STUDENT)):
        edges = np.asarray(st["edges"], dtype=float)
        centres = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(go.Bar(x=centres, y=st["density"], width=np.diff(edges), name=f"{nm} (mean {st['mean']:.3f}, "
                             f"std {st['std']:.3f})", marker_color=col, opacity=0.55,
                             hovertemplate=f"{nm}<br>cos %{{x:.2f}}<br>density %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="cos(angle) of sample triplets", range=[-1, 1])
    fig.update_yaxes(title_text="density")
    return finish(fig, title or "RKD angle distribution", height=380)


def dark_knowledge_heatmap(mat, classes: Sequence[str] | None = None, temperature: float | None = None,
                           hide_diagonal: bool = False, title: str | None = None) -> go.Figure:
    """(C, C) mean softened teacher probabilities per true class (analysis.dark_knowledge).
    hide_diagonal blanks the (dominant) correct-class entries so the dark knowledge -- the mass on
    wrong classes -- gets the whole colour range."""
    z = np.asarray(mat, dtype=float).copy()
    names = [str(c) for c in (classes if classes is not None else range(z.shape[1]))]
    if hide_diagonal:
        np.fill_diagonal(z, np.nan)
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names[:z.shape[0]], colorscale=SEQUENTIAL, zmin=0.0,
                               colorbar=dict(title="p"),
                               hovertemplate="true %{y}<br>predicted %{x}<br>p = %{z:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="teacher's softened probability for class", type="category")
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed")
    t = f" (T = {temperature:g})" if temperature is not None else ""
    return finish(fig, title or f"Dark knowledge: teacher's mean soft targets per class{t}", height=480)
