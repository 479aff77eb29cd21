"""Feature similarity (CKA): how alike the teacher's and the student's stage representations are on the
same samples, stage by stage, and how that changes over training."""
import pandas as pd
import streamlit as st

from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.app.analysis import block_labels, is_transformer, stage_label, stage_pairs
from explorer.app.runs import run_label
from explorer.plots import cka_heatmap, cka_over_epochs_figure

store = W.setup_page("Feature similarity (CKA)")
st.title("Feature similarity (CKA)")
st.caption("Centered kernel alignment (Kornblith et al. 2019) compares two representations of the same samples: "
           "1 = the same up to rotation and scale, 0 = unrelated. It works across different widths, so a small "
           "student's stages can be compared with a large teacher's.")

runs, probes, meta, pos = W.pick_analysis(store, "cka", k=16, allow_all=True)
c1, c2 = st.columns(2)
kind = c1.radio("Kernel", ["linear", "rbf"], horizontal=True, key="cka.kind")
within = c2.checkbox("Also within each model (teacher × teacher, student × student)", key="cka.within")
if len(pos) < 4:
    st.warning("CKA needs at least 4 samples; pick more.")
    st.stop()

if any(is_transformer(p[side]) for p in probes for side in ("teacher", "student")):
    st.caption("A transformer's stages are its blocks (\"block i\"), each block's patch tokens on their grid: the "
               "block × stage matrix of a ViT against a CNN is Raghu et al. 2021's \"Do vision transformers see like "
               "convolutional neural networks?\" — pick another epoch above to see it change over training.")


def unit(side: dict) -> str:
    return "block" if is_transformer(side) else "stage"


curves = []
for run, probe, sub, ref in W.side_by_side(runs, probes, pos):
    df = block_labels(C.cka(sub, "teacher", "student", kind))
    W.chart(cka_heatmap(df, title=f"{kind.capitalize()} CKA: {ref} × student", ylabel=f"{ref} {unit(sub['teacher'])}",
                        xlabel=f"student {unit(sub['student'])}"), key=f"cka.m.{run['id']}")
    if within:
        for side, name in (("teacher", ref), ("student", "student")):
            W.chart(cka_heatmap(block_labels(C.cka(sub, side, None, kind)),
                                title=f"{kind.capitalize()} CKA: {name} × {name}", xlabel=f"{name} {unit(sub[side])}",
                                ylabel=f"{name} {unit(sub[side])}"), key=f"cka.{side}.{run['id']}")
    pairs = stage_pairs(probe, run)                   # the pairs it distilled
    names = {f"{s} ↔ {t}": f"{stage_label(s)} ↔ {stage_label(t)}" for s, t in pairs}
    c = C.cka_over_epochs(run["run_dir"], kind, pairs)
    if "pair" in c:
        c = c.assign(pair=c["pair"].map(lambda k: names.get(k, k)))
    curves.append(c.assign(run=run_label(run)))

# the runs' curves on one chart (compare mode: one line per run and stage pair, one axis)
curve = pd.concat(curves, ignore_index=True) if len(curves) > 1 else curves[0].drop(columns="run")
W.chart(cka_over_epochs_figure(curve, title="Distilled stage pairs over training (all probe samples)"
                               + (" — both runs" if len(curves) > 1 else "")), key="cka.e")
