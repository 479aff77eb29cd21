"""Relation matrices: how each model relates samples to each other (what relational KD transfers), the
RKD angle distribution, and the teacher's dark knowledge between classes."""
import streamlit as st

from explorer.app import widgets as W
from explorer.analysis import (cosine_gram, dark_knowledge, relation_gap, rkd_angle_stats,
                               rkd_distance_matrix)
from explorer.plots import dark_knowledge_heatmap, relation_matrices, rkd_angle_histogram

store = W.setup_page("Relation matrices")
st.title("Relation matrices")
st.caption("Each cell is how similar two samples look to a model (its penultimate embedding). Relational KD "
           "(RKD, SP, CC) makes the student's matrix resemble the teacher's, even where their features differ.")

runs, probes, meta, pos = W.pick_analysis(store, "rel", k=16, allow_all=True)
c1, c2 = st.columns(2)
kind = c1.radio("Relation", ["cosine", "distance"], horizontal=True, key="rel.kind",
                format_func={"cosine": "cosine similarity", "distance": "RKD distance"}.get)
T = c2.slider("Temperature for dark knowledge", 1.0, 20.0, 4.0, 0.5, key="rel.T")
relate = cosine_gram if kind == "cosine" else rkd_distance_matrix

for run, probe, sub, ref in W.side_by_side(runs, probes, pos):
    mt, ms = relate(sub["teacher"]["embedding"]), relate(sub["student"]["embedding"])
    W.chart(relation_matrices(mt, ms, sub["y"], meta["classes"], kind=kind, gap=relation_gap(mt, ms)),
            key=f"rel.m.{run['id']}")
    if len(sub["y"]) >= 3:
        W.chart(rkd_angle_histogram(rkd_angle_stats(sub["teacher"]["embedding"]),
                                    rkd_angle_stats(sub["student"]["embedding"]), names=(ref, "student")),
                key=f"rel.a.{run['id']}")
    W.chart(dark_knowledge_heatmap(dark_knowledge(probe["teacher"]["logits"], probe["y"], T, len(meta["classes"])),
                                   meta["classes"], T, hide_diagonal=True,
                                   title=f"Dark knowledge: the {ref}'s soft targets per class (T = {T:g}, "
                                         "all probe samples)"), key=f"rel.d.{run['id']}")
