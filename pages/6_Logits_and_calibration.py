"""Logits & calibration: softened outputs of teacher and student on a sample, how often they agree,
calibration (reliability, ECE), confusion, per-class accuracy and the samples they disagree on most."""
import streamlit as st

from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.analysis.probes import list_probes
from explorer.analysis import agreement, calibration, confusion, disagreements, per_class_accuracy
from explorer.plots import (confusion_heatmaps, disagreement_gallery, per_class_accuracy_bars, reliability_diagram,
                            softened_bars)

store = W.setup_page("Logits & calibration")
st.title("Logits & calibration")
st.caption("What the two models output on the same test images. Softening with a temperature shows the "
           "dark knowledge; the reliability diagram shows whether confidence matches accuracy.")

runs, probes, meta, pos = W.pick_analysis(store, "log", k=4)
c1, c2 = st.columns(2)
T = c1.slider("Temperature T", 1.0, 20.0, 4.0, 0.5, key="log.T")
which = c2.selectbox("Sample for the softened outputs", list(pos), key="log.sample",
                     format_func=lambda p: f"#{int(probes[0]['index'][p])} · class "
                                           f"{meta['classes'][int(probes[0]['y'][p])]}")

def _agreement(run, probe, sub, ref) -> str:
    t, s = probe["teacher"]["logits"], probe["student"]["logits"]
    return f"top-1 agreement with the {ref}: **{agreement(t, s):.3f}** on {len(probe['y'])} probe samples"


for run, probe, sub, ref in W.side_by_side(runs, probes, pos, _agreement):
    t, s, y = probe["teacher"]["logits"], probe["student"]["logits"], probe["y"]
    p = min(int(which), len(y) - 1)
    W.chart(softened_bars(t[p], s[p], (1.0, T), meta["classes"], label=int(y[p]), names=(ref, "student")),
            key=f"log.soft.{run['id']}")
    full = C.test_logits(run)   # the final models on the whole test split (saved at the end of the run)
    if full is not None and "reference" in full and probe["epoch"] == max(dict(list_probes(run["run_dir"]))):
        t, s, y = full["reference"], full["student"], full["y"]
        st.caption(f"Calibration, confusion and per-class accuracy below: the final models on the **whole test "
                   f"split** ({len(y)} images).")
    else:
        st.caption(f"Calibration, confusion and per-class accuracy below: on the **{len(y)} probe samples** only "
                   + ("(an earlier epoch: the whole test split is scored for the final models only)."
                      if full is not None else "(this run did not save its test-split logits); few samples "
                                               "leave most reliability bins empty."))
    W.chart(reliability_diagram({ref: calibration(t, y, 10), "student": calibration(s, y, 10)}),
            key=f"log.rel.{run['id']}")
    W.chart(confusion_heatmaps({ref: confusion(t, y, len(meta["classes"])),
                                "student": confusion(s, y, len(meta["classes"]))}, meta["classes"],
                               show_difference=True), key=f"log.cm.{run['id']}")
    W.chart(per_class_accuracy_bars({ref: per_class_accuracy(t, y, meta["classes"]),
                                     "student": per_class_accuracy(s, y, meta["classes"])}),
            key=f"log.pc.{run['id']}")
    W.chart(disagreement_gallery(sub["x"], disagreements(sub["teacher"]["logits"], sub["student"]["logits"],
                                                         sub["y"], k=len(sub["y"]), T=T, index=sub["index"]),
                                 meta["classes"], mean=meta["mean"], std=meta["std"],
                                 title="The chosen samples, most different first"), key=f"log.dis.{run['id']}")
