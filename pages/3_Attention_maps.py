"""Attention maps: where teacher and student look, per stage, on samples you pick, at any recorded epoch;
Grad-CAM and saliency from the final models; the mean map of every class; and, where the dataset knows each
object's mask (shapes), the share of each model's attention that falls on the object."""
from pathlib import Path

import numpy as np
import streamlit as st

from explorer import teachers
from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.app import mask_fractions as MF
from explorer.app.analysis import final_gradcam, is_transformer, reference_name, stage_pairs, subset
from explorer.app.form import comparison_config, find_same_run
from explorer.app.runs import is_alone
from explorer.analysis import at_map, class_mean_maps, list_probes, map_gap, saliency, stage_attention
from explorer.analysis.mask_fraction import mask_fraction
from explorer.plots import attention_grid, class_mean_maps_figure, distillation_comparison, mask_fraction_figure
from explorer.plots.transformer import cls_attention_figure, maps_row_figure

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
            fn = lambda m: final_gradcam(m, sub["x"], sub["y"])  # noqa: E731
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

# A transformer's own attention (either side a ViT/DeiT): its rollout beside the other side's rollout, or beside a
# CNN's activation attention and Grad-CAM; and each block's class-token attention, per head.
if any(is_transformer(p[side]) for p in probes for side in ("teacher", "student")):
    st.subheader("Transformer attention")
    st.caption("**Attention rollout** (Abnar & Zuidema 2020, \"Quantifying Attention Flow in Transformers\") follows "
               "the attention through every block: each block's heads averaged, the residual connection added as "
               "0.5·A + 0.5·I, rows renormalised, the blocks multiplied first to last. The class token's row of the "
               "product, over the patches, shows what its final representation draws from each patch. "
               "**Class-token attention**: what each head of each block's class token attends to. Both recorded at "
               "every probe epoch (this one: the epoch picked above); a CNN side shows its deepest stage's "
               "activation attention and Grad-CAM (final model) instead. Each map is stretched to its own range (0: its minimum, 1: its maximum: a "
               "rollout is close to uniform, so its contrast is what to read); on datasets with object masks, each panel says the share of its mass inside the object.")
    for run, probe, sub, ref in W.side_by_side(runs, probes, pos):
        sides = {"teacher": ref, "student": "student"}
        cnn = [side for side in sides if not is_transformer(sub[side])]
        hw, n = tuple(sub["x"].shape[-2:]), len(sub["y"])
        deep = {side: list(stage_attention(sub[side], size=hw).values())[-1] for side in cnn if sub[side]["stages"]}
        cams = {}
        if cnn and n:
            models = models_of(run["id"])
            for side in cnn:
                if models.get(side) is not None:
                    m = models[side]
                    cams[side] = final_gradcam(m, sub["x"], sub["y"])
        masks = MF.probe_masks(run["config"], sub)
        for j in range(n):
            panels = []
            for side, name in sides.items():
                if side not in cnn:
                    panels.append((f"{name}: rollout", sub[side]["rollout"][j]))
                    continue
                if side in deep:
                    panels.append((f"{name}: attention<br>(deepest stage)", deep[side][j]))
                if side in cams:
                    panels.append((f"{name}: Grad-CAM<br>(final model)", cams[side][j]))
            scores = None if masks is None else [float(mask_fraction(m, masks[j])[0]) for _, m in panels]
            label = meta["classes"][int(sub["y"][j])]
            W.chart(maps_row_figure(sub["x"][j], panels, mean=meta["mean"], std=meta["std"], scores=scores,
                                    title=f"#{int(sub['index'][j])} (class {label}): rollout, epoch {probe['epoch']}"),
                    key=f"att.roll.{run['id']}.{j}")
        if n:
            j = st.selectbox("Sample for the block × head grid", range(n), key=f"att.heads.{run['id']}",
                             format_func=lambda i: f"#{int(sub['index'][i])}")
            for side, name in sides.items():
                if side not in cnn:
                    W.chart(cls_attention_figure(sub["x"][j], sub[side]["cls_attention"][j], mean=meta["mean"],
                                                 std=meta["std"], title=f"{name}: class-token attention, block × head "
                                                                        f"(#{int(sub['index'][j])}, epoch "
                                                                        f"{probe['epoch']})"),
                            key=f"att.cls.{run['id']}.{side}")

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
            cams = [final_gradcam(m, sub["x"], sub["y"]) for m in (models["teacher"], alone_student, models["student"])]
            gaps = tuple(float(map_gap(cams[0], cam)[1][0]) for cam in cams[1:])
            W.chart(distillation_comparison(sub["x"][0], cams[0][0], cams[1][0], cams[2][0], gaps=gaps,
                                            mean=meta["mean"], std=meta["std"],
                                            title=f"#{int(sub['index'][0])}: teacher, student alone "
                                                  f"({alone['summary'].get('test_acc', 0):.3f}), distilled student "
                                                  f"({run['summary'].get('test_acc', 0):.3f}) — Grad-CAM"),
                    key=f"att.compare.{run['id']}")

# Datasets that know where the object is (shapes): how much of each map falls on it, as a number.
run = runs[0]
masks = MF.probe_masks(run["config"], probes[0]) if reference_name(run) == "teacher" else None
if masks is not None:
    st.subheader("Attention inside the object")
    alone = None if is_alone(run) else find_same_run(store, comparison_config(run["config"]))
    stamp = tuple(Path(p).stat().st_mtime for r in (run, alone) if r is not None for _, p in list_probes(r["run_dir"]))
    df = C.mask_fractions(str(store.home), run["id"], alone["id"] if alone else None, stamp)
    chance = MF.chance_level(masks)
    st.caption("This dataset knows each object's mask, so where a model looks can be measured: each map (upsampled "
               "to the image, scaled to sum 1) scores the share of its mass that falls inside the object. 1: all on "
               f"the object; {chance:.2f} (dotted): the mask's mean area, what a map that ignores the image scores. "
               f"Activation attention at every recorded epoch of the {len(probes[0]['y'])} probe samples; "
               "Grad-CAM (hatched) of the final models for the true class.")
    if df.empty:
        st.info("No probe of this run could be scored against the masks.")
    else:
        W.chart(mask_fraction_figure(df, chance=chance), key=f"att.mask.{run['id']}")
        table = MF.last_epoch_table(df)
        table.index = [f"stage {int(d) + 1}" for d in table.index]
        st.dataframe(table.round(3))
        roll = MF.rollout_table(df)
        if not roll.empty:
            st.caption("The transformers' attention rollout (all blocks), last epoch: the cross-hatched bars.")
            st.dataframe(roll.round(3))
        att = df[(df["map"] == "attention")]
        last = att[att["epoch"] == att.groupby("model")["epoch"].transform("max")]
        per_class = last[last["depth"] == last["depth"].max()].pivot_table(index="cls", columns="model",
                                                                           values="fraction")
        per_class = per_class[[m for m in MF.MODELS if m in per_class.columns]]
        with st.expander("Per class (deepest stage, last epoch)"):
            st.dataframe(per_class.round(3))
        if alone is None and not is_alone(run):
            st.caption("Train the same recipe without distillation (the preset does it) to add the student alone.")
