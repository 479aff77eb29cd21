"""Attention maps: where teacher and student look, per stage, on samples you pick, at any recorded epoch;
Grad-CAM and saliency from the final models; and the mean map of every class."""
import numpy as np
import streamlit as st

from explorer import teachers
from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.app.analysis import stage_pairs, subset
from explorer.app.form import comparison_config, find_same_run
from explorer.analysis import at_map, class_mean_maps, gradcam, map_gap, saliency, stage_attention
from explorer.models.outputs import TapSpecs
from explorer.plots import attention_grid, class_mean_maps_figure, distillation_comparison

store = W.setup_page("Attention maps")
st.title("Attention maps")
st.caption("Activation attention (Zagoruyko & Komodakis): the mean of |feature|² over channels, per stage, "
           "each map scaled to a maximum of 1. Red in the difference column: the student looks there more.")

runs, probes, meta, pos = W.pick_analysis(store, "att", k=2)
pos = pos[:4]
kind = st.radio("Map", ["attention", "gradcam", "saliency"], horizontal=True, key="att.kind",
                format_func={"attention": "activation attention (any epoch)", "gradcam": "Grad-CAM (final model)",
                             "saliency": "saliency (final model)"}.get)
st.caption("**gap** (in each row's title, and under the differences): 1 − cosine similarity of the teacher's and the "
           "student's map — 0: they look at the same places (up to scale), 1: nowhere in common. Colours are the "
           "colour bar's own; the white lines outline the input image.")


def models_of(run_id: str) -> dict:
    return C.models(str(store.home), run_id)


def _reference_model(run, probe, sub, ref) -> str:
    t = teachers.of_run(run)                         # the teacher the run really had
    return f"{ref}: {(t.arch if t else None) or run['config'].get('teacher') or '–'}"


for run, probe, sub, ref in W.side_by_side(runs, probes, pos, _reference_model):
    hw = tuple(sub["x"].shape[-2:])
    if kind == "attention":
        pairs = stage_pairs(sub, run)               # the pairs this run's methods distilled
        tm, sm = stage_attention(sub["teacher"], size=hw), stage_attention(sub["student"], size=hw)
        maps = [([tm[t][j] for _, t in pairs], [sm[s][j] for s, _ in pairs]) for j in range(len(sub["y"]))]
        labels = [f"S {s} ↔ T {t}" for s, t in pairs]
    else:
        models = models_of(run["id"])
        if models["teacher"] is None:
            st.warning("This run's teacher could not be rebuilt (no teacher, or its file is gone).")
            continue
        if kind == "gradcam":
            fn = lambda m: gradcam(m, sub["x"], TapSpecs.of(m).stages[-1], target=sub["y"])  # noqa: E731
        else:
            fn = lambda m: saliency(m, sub["x"], target=sub["y"])  # noqa: E731
        t_all, s_all = fn(models["teacher"]), fn(models["student"])
        maps = [([t_all[j]], [s_all[j]]) for j in range(len(sub["y"]))]
        labels = [kind]
    for j, (t, s) in enumerate(maps):
        gaps = [float(map_gap(a, b)[1][0]) for a, b in zip(t, s)]
        label = meta["classes"][int(sub["y"][j])]
        W.chart(attention_grid(sub["x"][j], t, s, labels, gaps=gaps, mean=meta["mean"], std=meta["std"],
                               title=f"#{int(sub['index'][j])} (class {label})"), key=f"att.{run['id']}.{j}")
    y, c = np.asarray(probe["y"]), len(meta["classes"])
    tmean, smean = (class_mean_maps(at_map(probe[side]["stages"][-1]).numpy(), y, c)
                    for side in ("teacher", "student"))
    if tmean.shape == smean.shape:
        W.chart(class_mean_maps_figure(tmean, smean, meta["classes"],
                                       title=f"Mean attention per class, deepest stage ({len(y)} probe samples)"),
                key=f"att.mean.{run['id']}")

# Does distillation move the student's attention? The same sample for the teacher, the student trained alone
# (this run's recipe without distillation, when that run exists) and the distilled student: Grad-CAM, final models.
run = runs[0]
if run["methods"] != "none" or run["scheme"] != "offline":
    alone = find_same_run(store, comparison_config(run["config"]))
    if alone is None:
        st.info("Train the same recipe without distillation (a preset does it for you) to compare this student "
                "with the student trained alone.")
    else:
        models, alone_student = models_of(run["id"]), models_of(alone["id"])["student"]
        if models["teacher"] is not None and len(pos):
            sub = subset(probes[0], pos[:1])
            cams = [gradcam(m, sub["x"], TapSpecs.of(m).stages[-1], target=sub["y"])
                    for m in (models["teacher"], alone_student, models["student"])]
            gaps = tuple(float(map_gap(cams[0], cam)[1][0]) for cam in cams[1:])
            W.chart(distillation_comparison(sub["x"][0], cams[0][0], cams[1][0], cams[2][0], gaps=gaps,
                                            mean=meta["mean"], std=meta["std"],
                                            title=f"#{int(sub['index'][0])}: teacher, student alone "
                                                  f"({alone['summary'].get('test_acc', 0):.3f}), distilled student "
                                                  f"({run['summary'].get('test_acc', 0):.3f}) — Grad-CAM"),
                    key=f"att.compare.{run['id']}")
