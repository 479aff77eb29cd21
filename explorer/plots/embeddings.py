"""Embedding projections side by side, coloured by class."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import class_colors, finish

__all__ = ["embedding_scatter"]


def embedding_scatter(df: pd.DataFrame, classes: Sequence[str] | None = None, method: str = "PCA",
                      marker_size: int = 6, title: str | None = None) -> go.Figure:
    """One panel per model (analysis.project's columns: model, x, y, label, index), one Scatter
    trace per (model, class) with a class colour shared across panels; legend entries toggle a
    class in every panel. Hover shows the dataset index."""
    models = list(dict.fromkeys(df["model"]))
    labels = sorted(int(v) for v in pd.unique(df["label"]))
    colors = dict(zip(labels, class_colors(len(labels))))
    name = (lambda c: str(classes[c])) if classes is not None else (lambda c: str(c))
    fig = make_subplots(rows=1, cols=max(len(models), 1), subplot_titles=models, horizontal_spacing=0.06)
    for j, m in enumerate(models):
        sub = df[df["model"] == m]
        for c in labels:
            g = sub[sub["label"] == c]
            fig.add_trace(go.Scatter(x=g["x"], y=g["y"], mode="markers", name=name(c), legendgroup=str(c),
                                     showlegend=j == 0, customdata=np.asarray(g["index"]),
                                     marker=dict(color=colors[c], size=marker_size, opacity=0.8,
                                                 line=dict(width=0)),
                                     hovertemplate=f"{m}<br>class {name(c)}<br>index %{{customdata}}<extra></extra>"),
                          row=1, col=j + 1)
        fig.update_xaxes(title_text=f"{method} 1", row=1, col=j + 1, zeroline=False)
        fig.update_yaxes(title_text=f"{method} 2" if j == 0 else None, row=1, col=j + 1, zeroline=False)
    fig.update_layout(legend=dict(title="class", itemsizing="constant"))
    return finish(fig, title or f"Embeddings ({method}), coloured by class", height=460)
