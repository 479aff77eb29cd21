"""Representation similarity: CKA heatmaps and CKA over training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ._style import SEQUENTIAL, finish, run_colors

__all__ = ["cka_heatmap", "cka_over_epochs_figure"]


def cka_heatmap(df: pd.DataFrame, title: str | None = "Linear CKA", xlabel: str = "student stage",
                ylabel: str = "teacher stage", decimals: int = 2) -> go.Figure:
    """Heatmap of a CKA matrix (rows = df.index, cols = df.columns, as from analysis.cka_matrix),
    fixed 0-1 colour range, each cell annotated with its value; first row at the top."""
    z = df.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(c) for c in df.columns], y=[str(i) for i in df.index],
        zmin=0.0, zmax=1.0, colorscale=SEQUENTIAL, colorbar=dict(title="CKA"),
        text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.{decimals}f}")(z) if z.size else z,
        texttemplate="%{text}", textfont=dict(size=12),
        hovertemplate=f"{ylabel}: %{{y}}<br>{xlabel}: %{{x}}<br>CKA %{{z:.4f}}<extra></extra>"))
    fig.update_xaxes(title_text=xlabel, type="category", side="bottom")
    fig.update_yaxes(title_text=ylabel, type="category", autorange="reversed")
    return finish(fig, title, height=max(320, 70 * len(df.index) + 160), width=max(420, 90 * len(df.columns) + 260))


def cka_over_epochs_figure(df: pd.DataFrame, title: str | None = "CKA of matched stages over training",
                           color_by: str = "pair") -> go.Figure:
    """Lines of CKA vs epoch, one per matched stage pair (analysis.cka_over_epochs's columns:
    epoch, pair, cka; an optional run column makes one line per run and pair)."""
    fig = go.Figure()
    keys = ["run", color_by] if "run" in df.columns else [color_by]
    groups = list(df.groupby(keys, sort=False)) if len(df) else []
    colors = run_colors([k for k, _ in groups])
    for key, g in groups:
        g = g.sort_values("epoch")
        label = " · ".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["cka"], mode="lines+markers", name=label,
                                 line=dict(color=colors[key]),
                                 hovertemplate=f"{label}<br>epoch %{{x}}<br>CKA %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="CKA", range=[0, 1.02])
    return finish(fig, title, height=420)
