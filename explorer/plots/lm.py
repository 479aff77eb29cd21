"""Figures of the language-model page: next-token distributions side by side, the per-token KL strip, the
per-head attention of teacher and student, and the training curves (perplexity, terms, agreement)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import ATTENTION, SEQUENTIAL, finish, model_color

__all__ = ["show_char", "next_token_bars", "kl_strip", "attention_heads", "lm_curves"]


def show_char(ch: str) -> str:
    """A character (or a token's characters) as a tick label: space and newline made visible."""
    return "".join({" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, c) for c in ch)


def next_token_bars(probs: Mapping[str, Sequence[float]], vocab: Sequence[str], top_k: int = 12,
                    entropies: Mapping[str, float] | None = None, title: str | None = None) -> go.Figure:
    """One panel per model, the same tokens on every x axis: the union of each model's top_k, ordered by the
    first model's (the teacher's) probability. Mode covering vs mode seeking shows as mass spread or piled up."""
    names = list(probs)
    arrs = {n: np.asarray(p, dtype=float).reshape(-1) for n, p in probs.items()}
    first = arrs[names[0]]
    chosen = []
    for n in names:
        for i in np.argsort(-arrs[n])[:top_k]:
            if int(i) not in chosen:
                chosen.append(int(i))
    chosen.sort(key=lambda i: -first[i])
    labels = [show_char(vocab[i]) for i in chosen]
    titles = [f"{n}" + (f" · entropy {entropies[n]:.2f} nats" if entropies and n in entropies else "") for n in names]
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    for c, n in enumerate(names, start=1):
        fig.add_trace(go.Bar(x=labels, y=arrs[n][chosen], name=n, marker_color=model_color(n, c),
                             hovertemplate="%{x}: %{y:.3f}<extra>" + n + "</extra>"), row=1, col=c)
    fig.update_yaxes(title_text="probability", row=1, col=1)
    fig.update_xaxes(type="category")
    fig = finish(fig, title or "Next-token distributions on the same context", height=340)
    return fig.update_layout(showlegend=False)


def kl_strip(chars: Sequence[str], kl: Sequence[float], differs: Sequence[bool], width: int = 64,
             title: str | None = None) -> go.Figure:
    """The text as a grid of characters (rows of `width`), each cell coloured by KL(teacher || student) of the
    next-token distributions predicted at that position; a black dot marks a position where the student's
    top-1 token differs from the teacher's."""
    kl = np.asarray(kl, dtype=float).reshape(-1)
    differs = np.asarray(differs, dtype=bool).reshape(-1)
    n = len(kl)
    rows = -(-n // width)
    z = np.full((rows, width), np.nan)
    txt = np.full((rows, width), "", dtype=object)
    z.flat[:n] = kl
    txt.flat[:n] = [show_char(c) for c in chars[:n]]
    fig = go.Figure(go.Heatmap(z=z, text=txt, texttemplate="%{text}", colorscale=SEQUENTIAL, zmin=0,
                               colorbar=dict(title="KL (nats)"),
                               hovertemplate="'%{text}' · KL %{z:.3f}<extra></extra>"))
    pos = np.flatnonzero(differs)
    fig.add_trace(go.Scatter(x=pos % width, y=pos // width + 0.35, mode="markers", name="top-1 differs",
                             marker=dict(symbol="circle", size=5, color="black"), hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return finish(fig, title or "Teacher–student KL at every position (dots: the top-1 tokens differ)",
                  height=max(160, 36 * rows + 90))


def attention_heads(maps: Mapping[str, np.ndarray], tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """One row per model, one column per head: causal attention (query row -> key column), on 0..1."""
    names = list(maps)
    arrs = {n: np.asarray(m, dtype=float) for n, m in maps.items()}
    heads = max(a.shape[0] for a in arrs.values())
    fig = make_subplots(rows=len(names), cols=heads, horizontal_spacing=0.02, vertical_spacing=0.08,
                        subplot_titles=[f"{n} · head {h}" if h < arrs[n].shape[0] else ""
                                        for n in names for h in range(heads)])
    labels = [f"{i}:{show_char(t)}" for i, t in enumerate(tokens)]
    for r, n in enumerate(names, start=1):
        for h in range(arrs[n].shape[0]):
            fig.add_trace(go.Heatmap(z=arrs[n][h], x=labels, y=labels, colorscale=ATTENTION, zmin=0, zmax=1,
                                     showscale=(r == 1 and h == 0),
                                     hovertemplate="query %{y} → key %{x}: %{z:.3f}<extra></extra>"), row=r, col=h + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return finish(fig, title or "Attention of each head (rows: query position, columns: key position)",
                  height=260 * len(names))


def lm_curves(metrics: Mapping[str, pd.DataFrame], title: str | None = None) -> go.Figure:
    """Per run (label -> its epoch metrics in long form: epoch, name, value): validation perplexity, the
    training loss terms and the fraction of the student's top-1 tokens the teacher agrees with, per epoch."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["validation perplexity", "training terms",
                                                        "teacher agrees with the student's top-1"])
    for i, (label, df) in enumerate(metrics.items()):
        colour = model_color(label, i)
        wide = df.pivot_table(index="epoch", columns="name", values="value").sort_index()
        for col, key in ((1, "val/ppl"), (3, "val/agree")):
            if key in wide:
                fig.add_trace(go.Scatter(x=wide.index, y=wide[key], mode="lines+markers", name=label,
                                         legendgroup=label, showlegend=col == 1, line=dict(color=colour)),
                              row=1, col=col)
        for j, term in enumerate(c for c in wide.columns if c.startswith("train/") and c not in ("train/acc",)):
            fig.add_trace(go.Scatter(x=wide.index, y=wide[term], mode="lines+markers", name=f"{label} {term[6:]}",
                                     legendgroup=label, showlegend=False, line=dict(color=colour, dash=
                                     ["solid", "dot", "dash", "dashdot"][j % 4]),
                                     hovertemplate=f"{term[6:]}: " + "%{y:.4f}<extra>" + label + "</extra>"),
                          row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return finish(fig, title or "Training curves", height=340)
