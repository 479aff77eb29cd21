"""The Train page's live panel (Streamlit): a card per run (progress, every loss term, accuracy, images/s,
ETA, cancel; the teacher a run trains first, with its own progress), live curves while they train, the
teacher-student gap when they finish, and the queue. What it shows comes from the store (progress.py), not
from the session: any tab, opened at any time, shows every queued and running run; the session only adds
the finished runs it launched, picked or watched. It refreshes itself every second only while something
is queued or running."""
from __future__ import annotations

import streamlit as st

from ..store import Store
from .messages import name_widgets
from .progress import any_active, format_seconds, live_ids, progress, progress_text, queue_rows
from .runs import gap_closed, gap_rows
from .widgets import chart

ANALYSIS_LINKS = (("pages/3_Attention_maps.py", "Attention maps"), ("pages/4_Feature_similarity.py", "CKA"),
                  ("pages/5_Relation_matrices.py", "Relations"), ("pages/6_Logits_and_calibration.py", "Logits"),
                  ("pages/7_Embeddings.py", "Embeddings"), ("pages/2_Runs.py", "All runs"))
CARDS_PER_ROW = 3


def show(store: Store) -> None:
    """The panel, whenever a run is queued or running (from any session or process), or this session
    launched or watched runs."""
    ids = live_ids(store, st.session_state.get("active_runs", []))
    if not ids:
        return
    st.markdown("#### Live")
    active = any_active(store, ids)

    def live_panel():
        panel(store)
    st.fragment(live_panel, run_every=1.0 if active else None)()
    st.divider()


def run_card(store: Store, rid: str) -> dict:
    from ..jobs import cancel
    p = progress(store, rid)
    st.markdown(f"**{p['label']}** · `{p['status']}`")
    if p["status"] == "queued":
        st.caption(p["message"])
        if st.button("Cancel", key=f"cancel.{rid}"):
            cancel(rid, store)
    elif p["status"] == "running":
        sub = p["sub"]
        shown = sub or p                       # a run training its teacher first: that run's own progress
        what = f"its {' '.join(w for w in (sub['what'], sub.get('arch')) if w)}: " if sub else ""
        st.progress(shown["fraction"], text=what + progress_text(shown))
        losses = list(shown["losses"].items())
        for row in range(0, len(losses), 4):          # every loss term, four to a row
            for col, (name, v) in zip(st.columns(4), losses[row:row + 4]):
                col.metric(name, f"{v:.4f}")
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        for col, (name, v) in zip(st.columns(4), (("val acc", fmt(shown["val_acc"], ".3f")),
                                                  ("train acc", fmt(shown["train_acc"], ".3f")),
                                                  ("images/s", fmt(shown["images_per_s"], ",.0f")),
                                                  ("ETA", format_seconds(shown["eta_s"])))):
            col.metric(name, v)
        if shown["values_from"]:
            st.caption(f"loss terms and images/s: the newest record, {shown['values_from']}")
        if p["message"]:
            st.caption(name_widgets(p["message"]))
        if st.button("Cancel", key=f"cancel.{rid}"):
            cancel(rid, store)
    elif p["status"] == "completed":
        s = p["summary"]
        st.caption(f"test accuracy {s.get('test_acc', float('nan')):.3f} · trained in "
                   f"{format_seconds(s.get('seconds'))}")
    else:
        st.warning(name_widgets(p["message"] or p["status"]))
    return p


def panel(store: Store) -> None:
    from ..plots import training_curves
    ids = live_ids(store, st.session_state.get("active_runs", []))
    st.session_state["active_runs"] = ids     # what this tab watched: its results stay when they finish
    cards = []
    for row in range(0, len(ids), CARDS_PER_ROW):
        chunk = ids[row:row + CARDS_PER_ROW]
        for col, rid in zip(st.columns(min(len(ids), CARDS_PER_ROW)), chunk):
            with col:
                try:
                    cards.append(run_card(store, rid))
                except KeyError:      # deleted meanwhile
                    pass
    running = [c for c in cards if not c["final"]]
    if running:
        curve_ids = {(c["sub"] or c)["id"]: (c["sub"] and f"{c['label']}: its {c['sub']['what']}") or c["label"]
                     for c in cards if c["status"] != "queued"}
        df = store.metrics_df(list(curve_ids), "epoch")
        if not df.empty:
            df = df.assign(run=df["run_id"].map(curve_ids))
        names = [n for n in ("train/loss", "val/acc") if not df.empty and n in set(df["name"])]
        if names:
            chart(training_curves(df, names=names, title="Live curves"), key="train.live_curves")
    elif cards:
        results(store, cards)
    q = queue_rows(store)
    if q:
        st.markdown(f"**Queue** ({len(q)})")
        st.dataframe(q, hide_index=True)
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
    scheme_panels(store, [c["id"] for c in cards], "train")
    run = next((c["id"] for c in cards if c["status"] == "completed"), None)
    for col, (page, label) in zip(st.columns(len(ANALYSIS_LINKS)), ANALYSIS_LINKS):
        col.page_link(page, label=label, icon=":material/search:", query_params={"run": run} if run else None)


def scheme_panels(store: Store, run_ids: list[str], where: str) -> None:
    """What each finished run's scheme produced besides accuracies (runs.scheme_outputs): multi-teacher
    weights over training, data-free synthesised images per class, cross-modal views side by side."""
    from ..plots.app_extras import synthesised_grid, teacher_weight_curves, view_pairs
    from .runs import run_label, scheme_outputs
    for rid in run_ids:
        run = store.get_run(rid)
        out = scheme_outputs(store, run)
        if "weights" in out:
            chart(teacher_weight_curves(out["weights"], title=f"{run_label(run)}: each teacher's weight over "
                                                              "training"), key=f"{where}.weights.{rid}")
        if "synth" in out:
            chart(synthesised_grid(out["synth"]["images"], out["synth"]["labels"], out["synth"]["classes"],
                                   title=f"{run_label(run)}: images its generator synthesised, by the teacher's "
                                         "class"), key=f"{where}.synth.{rid}")
        if "views" in out:
            v = out["views"]
            chart(view_pairs(v["full"], v["view"], ("teacher: the images", f"student: {v['name']}"), v["labels"],
                             v["mean"], v["std"], title=f"{run_label(run)}: what each model sees"),
                  key=f"{where}.views.{rid}")
