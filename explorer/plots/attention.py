"""Where the models look: maps overlaid on the input image.

Maps are (H, W) arrays, expected normalised to [0, 1] (explorer.analysis.attention's default
"max" normalisation), drawn with a fixed 0-1 colour range so teacher and student are comparable;
differences (student - teacher) use a diverging scale centred at 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import ATTENTION, DIVERGING, finish, image_axes, symmetric_limit, to_display_image

__all__ = ["attention_grid", "class_mean_maps_figure", "distillation_comparison"]


def _arr(m) -> np.ndarray:
    a = m.detach().cpu().float().numpy() if hasattr(m, "detach") else np.asarray(m, dtype=float)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) map; got shape {a.shape}")
    return a


def _items(maps, labels=None) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(maps, Mapping):
        return [str(k) for k in maps], [_arr(v) for v in maps.values()]
    vals = [_arr(v) for v in maps]
    return (list(labels) if labels is not None else [f"stage {i + 1}" for i in range(len(vals))]), vals


def _coloraxes(fig: go.Figure, diff_limit: float, n_rows_hint: int = 1):
    fig.update_layout(
        coloraxis=dict(colorscale=ATTENTION, cmin=0.0, cmax=1.0,
                       colorbar=dict(title="attention", len=0.45, y=0.77, x=1.02)),
        coloraxis2=dict(colorscale=DIVERGING, cmin=-diff_limit, cmax=diff_limit, cmid=0.0,
                        colorbar=dict(title="student − teacher", len=0.45, y=0.23, x=1.02)))


def _overlay(fig, img, m, row, col, opacity, name):
    """The map opaque, so every colour drawn is one of its colour bar (blending it with a grey image made
    olive and brown that the bar does not have), with the input's outline drawn over it as white contour
    lines (opacity: theirs)."""
    fig.add_trace(go.Heatmap(z=m, coloraxis="coloraxis", opacity=1.0, name=name,
                             hovertemplate=f"{name}<br>x=%{{x}} y=%{{y}}<br>%{{z:.3f}}<extra></extra>"),
                  row=row, col=col)
    if img is not None:
        grey = np.asarray(img, dtype=float).mean(-1)
        lo, hi = float(grey.min()), float(grey.max())
        if hi > lo:
            fig.add_trace(go.Contour(z=grey, name="input outline", showscale=False, hoverinfo="skip", opacity=opacity,
                                     contours=dict(coloring="lines", start=lo + 0.35 * (hi - lo),
                                                   end=lo + 0.65 * (hi - lo), size=0.3 * (hi - lo)),
                                     line=dict(color="white", width=1.2), colorscale=[[0, "white"], [1, "white"]]),
                          row=row, col=col)
    image_axes(fig, row, col)


def _diff(fig, d, row, col, name="student − teacher"):
    fig.add_trace(go.Heatmap(z=d, coloraxis="coloraxis2", name=name,
                             hovertemplate=f"{name}<br>x=%{{x}} y=%{{y}}<br>%{{z:+.3f}}<extra></extra>"),
                  row=row, col=col)
    image_axes(fig, row, col)


def _fit(m: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize of a map to the image's (H, W) so the overlay lines up."""
    if m.shape == tuple(shape):
        return m
    ri = (np.arange(shape[0]) * m.shape[0] / shape[0]).astype(int)
    ci = (np.arange(shape[1]) * m.shape[1] / shape[1]).astype(int)
    return m[np.ix_(ri, ci)]


def attention_grid(image, teacher_maps, student_maps, stage_labels: Sequence[str] | None = None,
                   opacity: float = 0.8, gaps: Sequence[float] | None = None, mean=None, std=None,
                   title: str | None = "Where teacher and student look") -> go.Figure:
    """One sample, one row per stage: input | teacher map over the input | student map over the
    input | student − teacher (diverging, symmetric around 0).

    teacher_maps / student_maps: {stage: (H, W)} dicts (rows pair up in order) or lists.
    gaps: optional per-stage scalar gap (e.g. map_gap's 1 − cosine), shown in the row label.
    Traces per row: Image, Heatmap + Contour (the input's outline), Heatmap + Contour, Heatmap (6).
    """
    t_labels, t_maps = _items(teacher_maps, stage_labels)
    s_labels, s_maps = _items(student_maps, stage_labels)
    if len(t_maps) != len(s_maps):
        raise ValueError(f"attention_grid: {len(t_maps)} teacher maps but {len(s_maps)} student maps")
    if stage_labels is None:
        stage_labels = [t if t == s else f"{t} ↔ {s}" for t, s in zip(t_labels, s_labels)]
    img = to_display_image(image, mean, std)
    hw = img.shape[:2]
    rows = len(t_maps)
    diffs = [_fit(s, hw) - _fit(t, hw) for t, s in zip(t_maps, s_maps)]
    titles = []
    for r in range(rows):
        titles += ["input", "teacher", "student", "student − teacher"]
    fig = make_subplots(rows=rows, cols=4, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.06 if rows > 1 else 0.0)
    fig.update_annotations(font_size=12)   # four titles to a row fit a narrow column
    for r in range(rows):
        fig.add_trace(go.Image(z=img, name="input"), row=r + 1, col=1)
        image_axes(fig, r + 1, 1)
        # the row's stage (and gap) upright at its left: as a column title it ran into "teacher"
        lab = stage_labels[r] + (f"<br>gap {gaps[r]:.2f}" if gaps is not None else "")
        fig.update_yaxes(title_text=lab, title_font_size=12, row=r + 1, col=1)
        _overlay(fig, img, _fit(t_maps[r], hw), r + 1, 2, opacity, "teacher")
        _overlay(fig, img, _fit(s_maps[r], hw), r + 1, 3, opacity, "student")
        _diff(fig, diffs[r], r + 1, 4)
    _coloraxes(fig, symmetric_limit(*diffs))
    return finish(fig, title, height=230 * rows + 90)


def class_mean_maps_figure(teacher_means, student_means, classes: Sequence[str] | None = None,
                           max_classes: int = 10,
                           title: str | None = "Mean attention per class") -> go.Figure:
    """Rows teacher / student / student − teacher, one column per class (first max_classes).
    Inputs are (C, H, W) arrays from analysis.attention.class_mean_maps (NaN = class absent)."""
    t = np.asarray(teacher_means, dtype=float)
    s = np.asarray(student_means, dtype=float)
    if t.shape != s.shape or t.ndim != 3:
        raise ValueError(f"class_mean_maps_figure: need two (C, H, W) arrays of one shape; got {t.shape}, {s.shape}")
    c = min(t.shape[0], max_classes)
    names = [str(k) for k in (classes if classes is not None else range(t.shape[0]))][:c]
    fig = make_subplots(rows=3, cols=c, column_titles=names, row_titles=["teacher", "student", "student − teacher"],
                        horizontal_spacing=0.01, vertical_spacing=0.04)
    diffs = s[:c] - t[:c]
    for k in range(c):
        for r, (m, ax, nm) in enumerate(((t[k], "coloraxis", "teacher"), (s[k], "coloraxis", "student"),
                                         (diffs[k], "coloraxis2", "student − teacher"))):
            fig.add_trace(go.Heatmap(z=m, coloraxis=ax, name=f"{nm} · {names[k]}"), row=r + 1, col=k + 1)
            image_axes(fig, r + 1, k + 1)
    lim = symmetric_limit(diffs)
    top = max(1.0, float(np.nanmax(np.concatenate([t[:c].ravel(), s[:c].ravel()]))) if c else 1.0)
    _coloraxes(fig, lim)
    fig.update_layout(coloraxis=dict(cmax=top))
    return finish(fig, title, height=3 * 150 + 110, width=max(500, 120 * c + 200))


def distillation_comparison(image, teacher_map, alone_map, distilled_map, opacity: float = 0.8,
                            gaps: tuple[float, float] | None = None, mean=None, std=None,
                            labels: tuple[str, str, str] = ("teacher", "student alone", "distilled student"),
                            title: str | None = "Does distillation move the student's attention?") -> go.Figure:
    """The same sample seen by the teacher, the student trained alone and the distilled student.

    Row 1: the three maps over the input. Row 2: the input | alone − teacher | distilled − teacher
    (diverging, one symmetric range). gaps: optional (alone, distilled) scalar gaps to the teacher.
    """
    img = to_display_image(image, mean, std)
    hw = img.shape[:2]
    t, a, d = (_fit(_arr(m), hw) for m in (teacher_map, alone_map, distilled_map))
    da, dd = a - t, d - t
    ga = f" (gap {gaps[0]:.2f})" if gaps else ""
    gd = f" (gap {gaps[1]:.2f})" if gaps else ""
    # the differences' titles on three short lines: on one they ran into each other in a narrow column
    fig = make_subplots(rows=2, cols=3, horizontal_spacing=0.02, vertical_spacing=0.14,
                        subplot_titles=list(labels) + ["input", f"{labels[1]}<br>− {labels[0]}<br>{ga.strip(' ()')}",
                                                       f"{labels[2]}<br>− {labels[0]}<br>{gd.strip(' ()')}"])
    fig.update_annotations(font_size=12)
    for c, (m, nm) in enumerate(zip((t, a, d), labels)):
        _overlay(fig, img, m, 1, c + 1, opacity, nm)
    fig.add_trace(go.Image(z=img, name="input"), row=2, col=1)
    image_axes(fig, 2, 1)
    _diff(fig, da, 2, 2, f"{labels[1]} − {labels[0]}")
    _diff(fig, dd, 2, 3, f"{labels[2]} − {labels[0]}")
    _coloraxes(fig, symmetric_limit(da, dd))
    fig.update_layout(coloraxis2=dict(colorbar=dict(title="difference")))
    return finish(fig, title, height=560)


def mask_fraction_figure(df, chance: float | None = None,
                         title: str | None = "Attention inside the object mask") -> go.Figure:
    """Left: bars per stage (shallow → deep) at each model's last recorded epoch, teacher vs student alone vs
    distilled student (activation attention; Grad-CAM bars too when the frame has map == "gradcam", and a
    transformer's attention rollout, cross-hatched bars and dashed lines, when it has map == "rollout").
    Right: the deepest stage's fraction over the recorded epochs, one line per model. df: the per-class rows of
    explorer.app.mask_fractions (model, epoch, depth, stage, map, cls, fraction, n); chance: the mean mask area
    (what a map that ignores the image scores), drawn as a dotted line."""
    from ._style import BASELINE, STUDENT, TEACHER
    colors = {"teacher": TEACHER, "student alone": BASELINE, "distilled student": STUDENT}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=("per stage, last epoch", "deepest stage, over training"))
    if len(df):
        d = df.assign(w=df["fraction"] * df["n"])
        s = d.groupby(["model", "epoch", "depth", "map"], as_index=False)[["w", "n"]].sum()
        s["fraction"] = s["w"] / s["n"]
        att = s[s["map"] == "attention"]
        last = att[att["epoch"] == att.groupby("model")["epoch"].transform("max")]
        cams = s[s["map"] == "gradcam"]
        for m in colors:
            g = last[last["model"] == m].sort_values("depth")
            if len(g):
                fig.add_trace(go.Bar(x=[f"stage {int(k) + 1}" for k in g["depth"]], y=g["fraction"], name=m,
                                     marker_color=colors[m], legendgroup=m, offsetgroup=m,
                                     hovertemplate=f"{m}<br>%{{x}}<br>inside: %{{y:.3f}}<extra>attention</extra>"),
                              row=1, col=1)
            c = cams[cams["model"] == m]
            if len(c):
                c = c[c["depth"] == c["depth"].max()]
                fig.add_trace(go.Bar(x=["Grad-CAM (last stage)"], y=c["fraction"], name=f"{m} (Grad-CAM)",
                                     marker_color=colors[m], marker_pattern_shape="/", legendgroup=m, offsetgroup=m,
                                     showlegend=False,
                                     hovertemplate=f"{m}<br>Grad-CAM<br>inside: %{{y:.3f}}<extra></extra>"),
                              row=1, col=1)
            roll = s[(s["map"] == "rollout") & (s["model"] == m)]
            if len(roll):   # a transformer's attention rollout (all blocks): cross-hatched, and dashed over time
                rl = roll[roll["epoch"] == roll["epoch"].max()]
                fig.add_trace(go.Bar(x=["rollout (all blocks)"], y=rl["fraction"], name=f"{m} (rollout)",
                                     marker_color=colors[m], marker_pattern_shape="x", legendgroup=m, offsetgroup=m,
                                     showlegend=False,
                                     hovertemplate=f"{m}<br>rollout<br>inside: %{{y:.3f}}<extra></extra>"),
                              row=1, col=1)
                roll = roll.sort_values("epoch")
                fig.add_trace(go.Scatter(x=roll["epoch"], y=roll["fraction"], mode="lines+markers",
                                         name=f"{m} (rollout)", line=dict(color=colors[m], dash="dash"),
                                         legendgroup=m, showlegend=False,
                                         hovertemplate=f"{m} rollout<br>epoch %{{x}}<br>inside: %{{y:.3f}}"
                                                       "<extra></extra>"), row=1, col=2)
            deep = att[att["model"] == m]
            if len(deep):
                deep = deep[deep["depth"] == deep["depth"].max()].sort_values("epoch")
                fig.add_trace(go.Scatter(x=deep["epoch"], y=deep["fraction"], mode="lines+markers", name=m,
                                         line=dict(color=colors[m]), legendgroup=m, showlegend=False,
                                         hovertemplate=f"{m}<br>epoch %{{x}}<br>inside: %{{y:.3f}}<extra></extra>"),
                              row=1, col=2)
    if chance is not None:
        for col in (1, 2):
            fig.add_hline(y=chance, line_dash="dot", line_color="#555", row=1, col=col,
                          annotation_text="chance (mask area)" if col == 2 else None,
                          annotation_position="bottom right")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.18))
    fig.update_yaxes(title_text="fraction of the map inside the mask", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    return finish(fig, title, height=440)
