"""Runs: every run in the store, a page at a time, filtered, sorted and paged by the store (SQL); compare
several (curves and final accuracy), export their metrics (CSV) and configs (YAML), cancel, resume or delete them."""
from dataclasses import replace

import streamlit as st

from explorer import jobs
from explorer.app import live
from explorer.app import runs as R
from explorer.app import widgets as W
from explorer.kd import list_methods
from explorer.schemes import list_schemes
from explorer.plots import training_curves
from explorer.plots.app_extras import gap_bars
from explorer.store import STATUSES

store = W.setup_page("Runs")
st.title("Runs")

everything = store.count_runs()
if not everything:
    st.info("No runs yet. Launch one on the **Train** page, or with one click on **Home**.")
    st.page_link(W.TRAIN, label="Go to Train", icon=":material/model_training:")
    st.stop()

# filters, sort and paging happen in the store (SQL): only the page of runs shown is read
c1, c2, c3, c4, c5 = st.columns(5)
statuses = c1.multiselect("Status", list(STATUSES), key="runs.status")
datasets = c2.multiselect("Dataset", store.distinct("dataset"), key="runs.dataset")
schemes = c3.multiselect("Scheme", store.distinct("scheme"), key="runs.scheme")
methods = c4.multiselect("Method", list_methods() + ["none"] + [s for s in list_schemes() if s != "offline"],
                         key="runs.method", help="runs using any of these knowledge terms or schemes "
                                                 "('none': the student alone)")
students = c5.multiselect("Student", store.distinct("student"), key="runs.student")
c1, c2, c3, c4, c5 = st.columns([3, 2, 1, 1, 1])
search = c1.text_input("Search", key="runs.search", placeholder="name, id, dataset, model, message…")
sort = c2.selectbox("Sort by", R.SORTS, format_func=R.SORTS.get, key="runs.sort")
descending = c3.selectbox("Order", ["descending", "ascending"], key="runs.order") == "descending"
per_page = c4.selectbox("Per page", [50, 100, 200, 25], key="runs.per_page")
query = R.run_query(datasets, statuses, methods, schemes=schemes, students=students, search=search, sort=sort,
                    descending=descending)
total = store.count_runs(query)
pages = max(1, -(-total // per_page))
shape = repr((query, per_page))
if st.session_state.get("runs.shape") != shape:   # other filters or another sort: back to the first page
    st.session_state["runs.shape"], st.session_state["runs.page"] = shape, 1
st.session_state["runs.page"] = min(st.session_state["runs.page"], pages)   # runs deleted meanwhile
page = c5.number_input("Page", 1, pages, key="runs.page", help=f"{pages} page(s)")
df = R.table_of(store.query_runs(replace(query, limit=per_page, offset=(page - 1) * per_page)))
first = (page - 1) * per_page
st.caption(f"Runs {first + 1 if total else 0:,}–{first + len(df):,} of {total:,}"
           + (f" matching (of {everything:,} in the store)" if total != everything else ""))
if df.empty:
    st.info("No run matches these filters.")
    st.stop()
if df["teacher"].isna().all():   # no listed run had a teacher (DML, BYOT, ...): no teacher columns
    df = df.drop(columns=["teacher", "teacher_acc"])
st.dataframe(df, hide_index=True, key="runs.table", column_config={
    "teacher": st.column_config.TextColumn("teacher", help="the teacher the run really used; blank: it had none"),
    "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
    "teacher_acc": st.column_config.NumberColumn("teacher acc", format="%.4f"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")})

labels = {r["id"]: f"{r['name']} [{r['id'][-6:]}] · {r['status']}" for r in df.to_dict("records")}
done = [i for i, status in zip(df["id"], df["status"]) if status == "completed"]
last_group = [i for i in R.default_compare(store) if i in labels] or done[:2]
selected = st.multiselect("Select runs to compare, export or manage", list(labels), default=last_group,
                          format_func=labels.get, key="runs.selected",
                          help="at first: the last launched group (the run and its student-alone partner)")
if not selected:
    st.stop()
W.figure_runs([store.get_run(i) for i in selected])

curves, final, export, manage = st.tabs(["Curves", "Final accuracy", "Export", "Manage"])
with curves:
    long = R.compare_metrics(store, selected)
    names = sorted(set(long["name"])) if not long.empty else []
    want = [n for n in ("val/acc", "train/loss", "train/acc") if n in names]
    pick = st.multiselect("Metrics", names, default=want, key="runs.metrics")
    if pick:
        W.chart(training_curves(long, names=pick), key="runs.curves")
    else:
        st.caption("No epoch metrics recorded for these runs yet.")
with final:
    rows = R.gap_rows(store, selected)
    if rows:
        W.chart(gap_bars(rows), key="runs.gap")
    live.scheme_panels(store, selected, "runs")   # multi-teacher weights, synthesised images, cross-modal views
    own = {r["id"]: (r["teacher"] or "–").replace("<br>", " ") for r in rows if r["kind"] != "teacher"}
    summary = [{"run": R.run_label(r), "compared with": own.get(r["id"], "–"),
                **{k: v for k, v in r["summary"].items() if not isinstance(v, (dict, list))}}
               for r in (store.get_run(i) for i in selected)]
    st.dataframe(summary, hide_index=True)
with export:
    st.download_button("Metrics (CSV)", R.metrics_csv(store, selected), file_name="kd-explorer-metrics.csv",
                       mime="text/csv", key="runs.csv")
    st.download_button("Config (YAML)", R.configs_yaml(store, selected), file_name="kd-explorer-config.yaml",
                       mime="application/x-yaml", key="runs.yaml",
                       help="`kd-explorer run --config FILE` reruns it (one run per file)")
with manage:
    runs = [store.get_run(i) for i in selected]
    c1, c2, c3, c4 = st.columns(4)
    if c1.button("Cancel", key="runs.cancel", disabled=not any(r["status"] in ("queued", "running") for r in runs)):
        for r in runs:
            if r["status"] in ("queued", "running"):
                jobs.cancel(r["id"], store)
        st.rerun()
    if c2.button("Resume", key="runs.resume", disabled=not any(r["status"] in jobs.RESUMABLE for r in runs)):
        for r in runs:
            if r["status"] in jobs.RESUMABLE:
                jobs.resume(r["id"], store)
        st.session_state["active_runs"] = [r["id"] for r in runs if r["status"] in jobs.RESUMABLE]
        st.switch_page(W.TRAIN)
    if c3.button("Open in Train", key="runs.open", disabled=len(runs) != 1,
                 help="the Train page, filled in with this run's config"):
        W.open_in_train(runs[0]["config"])
    if c4.button("Delete…", key="runs.delete"):
        st.session_state["runs.confirm"] = selected
    if st.session_state.get("runs.confirm") == selected:
        busy = [r for r in runs if r["status"] in ("queued", "running")]
        if busy:
            st.error(f"Cancel {len(busy)} queued or running run(s) first.")
        else:
            st.warning(f"Delete {len(runs)} run(s) with their metrics, checkpoints and probes? This cannot be undone.")
            a, b = st.columns(2)
            if a.button("Yes, delete", type="primary", key="runs.delete.yes"):
                for r in runs:
                    store.delete_run(r["id"])
                del st.session_state["runs.confirm"]
                st.session_state.pop("runs.selected", None)
                st.rerun()
            if b.button("Keep them", key="runs.delete.no"):
                del st.session_state["runs.confirm"]
                st.rerun()
