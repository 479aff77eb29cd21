"""The Train page's live panel (Streamlit): a card per launched run (progress, every loss term, accuracy,
images/s, ETA, cancel), live curves while they train, the teacher-student gap when they finish, and the
queue. It refreshes itself every second only while something is queued or running."""
from __future__ import annotations

import streamlit as st

from ..store import Store
from .progress import any_active, format_seconds, progress
from .runs import compare_metrics, gap_closed, gap_rows, run_label
from .widgets import chart

ANALYSIS_LINKS = (("pages/3_Attention_maps.py", "Attention maps"), ("pages/4_Feature_similarity.py", "CKA"),
                  ("pages/5_Relation_matrices.py", "Relations"), ("pages/6_Logits_and_calibration.py", "Logits"),
                  ("pages/7_Embeddings.py", "Embeddings"), ("pages/2_Runs.py", "All runs"))


def show(store: Store) -> None:
    """The panel, when the session launched runs or the queue is not empty."""
    from .. import jobs
    if not (st.session_state.get("active_runs") or jobs.queue(store)):
        return
    st.markdown("#### Live")
    active = bool(jobs.queue(store)) or any_active(store, st.session_state.get("active_runs", []))

    def live_panel():
        panel(store)
    st.fragment(live_panel, run_every=1.0 if active else None)()
    st.divider()


def run_card(store: Store, rid: str) -> dict:
    from ..jobs import cancel
    p = progress(store, rid)
    st.markdown(f"**{p['name']}** · `{p['status']}`")
    if p["status"] == "queued":
        st.caption(p["message"])
        if st.button("Cancel", key=f"cancel.{rid}"):
            cancel(rid, store)
    elif p["status"] == "running":
        label = f"epoch {p['epoch']}/{p['epochs']} · {100 * p['fraction']:.0f}% · ETA {format_seconds(p['eta_s'])}"
        st.progress(p["fraction"], text=label)
        losses = list(p["losses"].items())
        for row in range(0, len(losses), 4):          # every loss term, four to a row
            for col, (name, v) in zip(st.columns(4), losses[row:row + 4]):
                col.metric(name, f"{v:.4f}")
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        for col, (name, v) in zip(st.columns(4), (("val acc", fmt(p["val_acc"], ".3f")),
                                                  ("train acc", fmt(p["train_acc"], ".3f")),
                                                  ("images/s", fmt(p["images_per_s"], ",.0f")),
                                                  ("ETA", format_seconds(p["eta_s"])))):
            col.metric(name, v)
        if p["message"]:
            st.caption(p["message"])
        if st.button("Cancel", key=f"cancel.{rid}"):
            cancel(rid, store)
    elif p["status"] == "completed":
        s = p["summary"]
        st.caption(f"test accuracy {s.get('test_acc', float('nan')):.3f} · trained in "
                   f"{format_seconds(s.get('seconds'))}")
    else:
        st.warning(p["message"] or p["status"])
    return p


def panel(store: Store) -> None:
    from .. import jobs
    from ..plots import training_curves
    ids = st.session_state.get("active_runs", [])
    cards = []
    for col, rid in zip(st.columns(max(len(ids), 1)), ids):
        with col:
            try:
                cards.append(run_card(store, rid))
            except KeyError:      # deleted meanwhile
                pass
    running = [c for c in cards if not c["final"]]
    if running:
        df = compare_metrics(store, [c["id"] for c in cards])
        names = [n for n in ("train/loss", "val/acc") if not df.empty and n in set(df["name"])]
        if names:
            chart(training_curves(df, names=names, title="Live curves"), key="train.live_curves")
    elif cards:
        results(store, cards)
    q = jobs.queue(store)
    if q:
        st.markdown(f"**Queue** ({len(q)})")
        st.dataframe([{"#": r["position"], "run": run_label(r), "status": r["status"], "device": r["device"]}
                      for r in q], hide_index=True)
    was = st.session_state.get("_live_was_running", False)
    st.session_state["_live_was_running"] = bool(running or q)
    if was and not (running or q):
        st.rerun()            # the whole page: stop refreshing, show the results


def results(store: Store, cards: list[dict]) -> None:
    """Finished runs: each student against its own teacher, the share of the gap closed, links onward."""
    from ..plots.app_extras import gap_bars
    rows = gap_rows(store, [c["id"] for c in cards])
    if not rows:
        return
    for col, r in zip(st.columns(len(rows)), rows):
        t = r.get("teacher_acc")
        col.metric(r["label"].replace("<br>", " · "), f"{r['acc']:.3f}",
                   None if t is None else f"{100 * (r['acc'] - t):+.1f} pts vs teacher")
    closed = gap_closed(rows)
    if closed is not None and closed > 0:
        st.success(f"Distillation closed **{closed:.0%}** of the gap between the student trained alone "
                   "and the teacher.")
    elif closed is not None:
        st.info("This time the distilled student did no better than the student alone; short runs are "
                "noisy — try more epochs or another seed.")
    chart(gap_bars(rows), key="train.gap")
    run = next((c["id"] for c in cards if c["status"] == "completed"), None)
    for col, (page, label) in zip(st.columns(len(ANALYSIS_LINKS)), ANALYSIS_LINKS):
        col.page_link(page, label=label, icon=":material/search:", query_params={"run": run} if run else None)
