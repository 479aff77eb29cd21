"""Training curves from a long metrics DataFrame (columns: epoch, name, value, run)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import finish, run_colors

__all__ = ["training_curves"]


def training_curves(df: pd.DataFrame, names: Sequence[str] | None = None, runs: Sequence[str] | None = None,
                    cols: int = 2, log_y: Sequence[str] = (), title: str | None = None) -> go.Figure:
    """One panel per metric name, one line per run, the same colour for a run in every panel
    (legend entries toggle the run everywhere). Without a run column the frame is one run.
    names / runs select and order the metrics and runs; metrics listed in log_y get a log axis."""
    need = {"epoch", "name", "value"}
    if not need <= set(df.columns):
        raise ValueError(f"training_curves: need columns {sorted(need)} (+ run); got {list(df.columns)}")
    if "run" not in df.columns:
        df = df.assign(run="run")
    names = list(names) if names is not None else list(dict.fromkeys(df["name"]))
    runs = list(runs) if runs is not None else list(dict.fromkeys(df["run"]))
    if not names:
        fig = go.Figure()
        fig.add_annotation(text="no metrics yet", showarrow=False)
        return finish(fig, title or "Training curves", height=200)
    cols = max(1, min(cols, len(names)))
    rows = math.ceil(len(names) / cols)
    colors = run_colors(runs)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, vertical_spacing=0.14 if rows > 1 else 0.1,
                        horizontal_spacing=0.1)
    for i, nm in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        for run in runs:
            g = df[(df["name"] == nm) & (df["run"] == run)].sort_values("epoch")
            if g.empty:
                continue
            fig.add_trace(go.Scatter(x=g["epoch"], y=g["value"], mode="lines+markers" if len(g) < 40 else "lines",
                                     name=str(run), legendgroup=str(run), showlegend=False,
                                     line=dict(color=colors[run]), marker=dict(size=5),
                                     hovertemplate=f"{run}<br>{nm}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
        fig.update_yaxes(title_text=nm, type="log" if nm in log_y else None, row=r, col=c)
    shown = set()
    for tr in fig.data:                                   # one legend entry per run
        if tr.name not in shown:
            tr.showlegend = True
            shown.add(tr.name)
    return finish(fig, title or "Training curves", height=300 * rows + 100)
