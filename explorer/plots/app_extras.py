"""Figures only the app's Home and Train pages need: the KD map, the temperature playground and the
teacher–student gap. Pure builders like the rest of explorer.plots (arrays / DataFrames in, Figure out)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.logits import soften
from ._style import BASELINE, STUDENT, TEACHER, finish, image_axes, to_display_image

__all__ = ["taxonomy_sunburst", "temperature_playground", "gap_bars", "synthesised_grid", "view_pairs",
           "teacher_weight_curves"]

_BRANCH = {"knowledge": "knowledge", "scheme": "schemes"}


def taxonomy_sunburst(df: pd.DataFrame, title: str | None = "Knowledge distillation: a map") -> go.Figure:
    """Sunburst KD -> branch (knowledge / scheme) -> category -> method or scheme.
    df: rows with branch, category, key, name, year (explorer.app.analysis.taxonomy)."""
    ids, labels, parents, hover = ["KD"], ["KD"], [""], ["knowledge distillation"]
    for branch, g in df.groupby("branch", sort=False):
        b = _BRANCH.get(branch, branch)
        ids.append(branch), labels.append(b), parents.append("KD"), hover.append(b)
        for cat, gc in g.groupby("category", sort=False):
            cid = f"{branch}/{cat}"
            ids.append(cid), labels.append(cat), parents.append(branch), hover.append(f"{cat}: {len(gc)}")
            for _, r in gc.iterrows():
                ids.append(f"{cid}/{r['key']}")
                labels.append(str(r["key"]))
                parents.append(cid)
                hover.append(f"{r['name']} ({r['year'] or '–'})")
    fig = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, hovertext=hover,
                                hovertemplate="%{hovertext}<extra></extra>", insidetextorientation="radial",
                                maxdepth=4))
    return finish(fig, title, height=560)


def temperature_playground(logits, T: float, y=None, classes: Sequence[str] | None = None, images=None,
                           mean=None, std=None, title: str | None = None) -> go.Figure:
    """A teacher's output on a few samples at T = 1 (grey) and at T (blue), one row per sample with
    the input image beside it. The row title gives the dark knowledge: the probability mass on the
    classes other than the top one, which softening raises."""
    z = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=float)
    if z.ndim == 1:
        z = z[None]
    n, c = z.shape
    names = [str(k) for k in (classes if classes is not None else range(c))]
    p1, pt = soften(z, 1.0), soften(z, T)
    cols = 2 if images is not None else 1
    titles = []
    for i in range(n):
        top = int(pt[i].argmax())
        lab = f"true {names[int(y[i])]} · " if y is not None else ""
        dark = f"{lab}dark knowledge {1 - p1[i, top]:.3f} at T=1 → {1 - pt[i, top]:.3f} at T={T:g}"
        titles += ([""] if images is not None else []) + [dark]
    fig = make_subplots(rows=n, cols=cols, column_widths=[0.12, 0.88] if cols == 2 else None,
                        subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.3 / max(n, 1))
    for i in range(n):
        if images is not None:
            fig.add_trace(go.Image(z=to_display_image(images[i], mean, std), name=f"sample {i}"), row=i + 1, col=1)
            image_axes(fig, i + 1, 1)
        for p, nm, col in ((p1, "T = 1", BASELINE), (pt, f"T = {T:g}", TEACHER)):
            fig.add_trace(go.Bar(x=names, y=p[i], name=nm, marker_color=col, legendgroup=nm, showlegend=i == 0,
                                 hovertemplate=f"{nm}<br>class %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=i + 1, col=cols)
        fig.update_yaxes(range=[0, 1], row=i + 1, col=cols, title_text="p" if i == n // 2 else None)
        fig.update_xaxes(type="category", row=i + 1, col=cols)
    fig.update_layout(barmode="group")
    fig.update_annotations(font_size=12)
    return finish(fig, title or f"The teacher's softened outputs (softmax(z / T), T = {T:g})", height=150 * n + 120)


def gap_bars(rows: Sequence[dict], title: str | None = "Test accuracy: the teacher–student gap") -> go.Figure:
    """Bars of test accuracy: rows of {label, acc, kind[, run, teacher_acc]} with kind teacher / student alone /
    distilled (or what a scheme produced besides its student: peer / ensemble / assistant, drawn lighter);
    each student bar is annotated with its gap in points to its own teacher (its row's teacher_acc, None: no
    gap shown; rows without that key: the first teacher row). The accuracy axis starts at 0."""
    color = {"teacher": TEACHER, "student alone": BASELINE, "distilled": STUDENT, "peer": "#7fb3d5",
             "ensemble": "#1f618d", "assistant": "#a569bd"}
    first = next((r["acc"] for r in rows if r["kind"] == "teacher"), None)
    fig = go.Figure()
    for r in rows:
        teacher = r["teacher_acc"] if "teacher_acc" in r else first
        gap = "" if teacher is None or r["kind"] == "teacher" else f"<br>{100 * (r['acc'] - teacher):+.1f} pts"
        fig.add_trace(go.Bar(x=[r["label"]], y=[r["acc"]], name=r["kind"], marker_color=color.get(r["kind"], STUDENT),
                             text=[f"{r['acc']:.3f}{gap}"], textposition="outside", cliponaxis=False,
                             showlegend=False, hovertemplate=f"{r.get('run', r['label'])}<br>test accuracy "
                                                             f"%{{y:.4f}}<extra>{r['kind']}</extra>"))
    fig.update_yaxes(title_text="test accuracy", range=[0.0, 1.08], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    if first is None and title == "Test accuracy: the teacher–student gap":   # no teacher: no gap to speak of
        title = "Test accuracy (no teacher: these runs learned without one)"
    fig.update_xaxes(type="category")
    fig.update_layout(bargap=0.45)
    return finish(fig, title, height=380)


def synthesised_grid(images, labels, classes: Sequence[str], per_class: int = 6,
                     title: str | None = "Images the generator synthesised, by the teacher's class") -> go.Figure:
    """A data-free run's synthesised images (uint8 (N, C, H, W)), one row per class the teacher gave them,
    up to per_class each; classes with none say so in the row title."""
    imgs = np.asarray(images.cpu() if hasattr(images, "cpu") else images)
    lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(int)
    rows = list(range(len(classes)))
    titles = []
    for k in rows:
        n = int((lab == k).sum())
        titles += [f"{classes[k]} ({n})" if i == 0 else "" for i in range(per_class)]
    fig = make_subplots(rows=len(rows), cols=per_class, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.25 / max(len(rows), 1))
    for k in rows:
        for i, j in enumerate(np.flatnonzero(lab == k)[:per_class]):
            fig.add_trace(go.Image(z=to_display_image(imgs[j]), name=f"{classes[k]} #{i + 1}"), row=k + 1, col=i + 1)
        for i in range(per_class):
            image_axes(fig, k + 1, i + 1)
    fig.update_annotations(font_size=11, xanchor="left")
    return finish(fig, title, height=95 * len(rows) + 110)


def view_pairs(full, view, names: tuple[str, str], labels: Sequence[str] | None = None, mean=None, std=None,
               title: str | None = "What each model sees: the teacher's view and the student's view") -> go.Figure:
    """Cross-modal KD: the same samples in the teacher's modality (row 1) and in the student's (row 2)."""
    n = len(full)
    fig = make_subplots(rows=2, cols=n, row_titles=list(names), column_titles=list(labels) if labels else None,
                        horizontal_spacing=0.01, vertical_spacing=0.04)
    for i in range(n):
        fig.add_trace(go.Image(z=to_display_image(full[i], mean, std), name=f"{names[0]} #{i}"), row=1, col=i + 1)
        fig.add_trace(go.Image(z=to_display_image(view[i]), name=f"{names[1]} #{i}"), row=2, col=i + 1)
        image_axes(fig, 1, i + 1)
        image_axes(fig, 2, i + 1)
    return finish(fig, title, height=360)


def teacher_weight_curves(df: pd.DataFrame, title: str | None = "Each teacher's weight over training") -> go.Figure:
    """Multi-teacher KD: the mean weight each teacher got per epoch (long metrics with name teacher_weight/<arch>)."""
    fig = go.Figure()
    for name, g in df[df["name"].str.startswith("teacher_weight/")].groupby("name", sort=True):
        g = g.sort_values("epoch")
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["value"], mode="lines+markers", name=name.split("/", 1)[1],
                                 hovertemplate=f"{name.split('/', 1)[1]}<br>epoch %{{x}}<br>weight %{{y:.3f}}"
                                               "<extra></extra>"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="mean weight (sums to 1)", range=[0, 1.02])
    return finish(fig, title, height=360)
