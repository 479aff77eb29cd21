"""The Runs page's logic, with no Streamlit in it: the table, labels, compared curves, exports, and the
teacher-student gap, where each run is compared with the teacher it really had (explorer.teachers)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from .. import teachers
from ..store import Store

RUN_COLUMNS = ["name", "status", "dataset", "scheme", "methods", "student", "teacher", "test_acc", "teacher_acc",
               "role", "created", "id", "message"]


# ---------------------------------------------------------------------- table, labels, compare, export
def runs_table(store: Store, datasets=None, statuses=None, methods=None) -> pd.DataFrame:
    """The Runs page's table, newest first, filtered by dataset, status and method (any of the given)."""
    df = store.runs_df()
    if df.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    for col in RUN_COLUMNS:
        if col not in df.columns:
            df[col] = None
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if statuses:
        df = df[df["status"].isin(statuses)]
    if methods:
        df = df[df["methods"].apply(lambda m: bool(set(str(m).split("+")) & set(methods)))]
    return df[RUN_COLUMNS].sort_values("created", ascending=False).reset_index(drop=True)


def run_label(run: Mapping) -> str:
    name = run.get("name") or run["id"]
    return name if name == run["id"] else f"{name} [{run['id'][-6:]}]"


def is_alone(run: Mapping) -> bool:
    """A student trained without distillation (the comparison run of a preset)."""
    cfg = run["config"]
    return cfg.get("scheme", "offline") == "offline" and not cfg.get("methods")


def compare_metrics(store: Store, run_ids: list[str], scope: str = "epoch") -> pd.DataFrame:
    """Long metrics (run label, epoch, name, value) of several runs, for training_curves."""
    df = store.metrics_df(run_ids, scope)
    labels = {rid: run_label(store.get_run(rid)) for rid in run_ids}
    return df.assign(run=df["run_id"].map(labels)) if not df.empty else df.assign(run=[])


def metrics_csv(store: Store, run_ids: list[str]) -> bytes:
    df = pd.concat([store.metrics_df(run_ids, scope) for scope in ("epoch", "step", "final")], ignore_index=True)
    return df.to_csv(index=False).encode()


def configs_yaml(store: Store, run_ids: list[str]) -> str:
    """Each run's config as YAML (several runs: one document each); `kd-explorer run --config` reads one."""
    docs = [yaml.safe_dump(store.get_run(r)["config"], sort_keys=False) for r in run_ids]
    return "---\n".join(docs)


# ---------------------------------------------------------------------- the teacher-student gap
def run_teacher(run: Mapping) -> dict | None:
    """The teacher `run` was compared with when it ran: {key, arch, acc, about, tag}, from its stored
    reference (teachers.of_run), else what its summary says; None when it had none or no accuracy."""
    s = run["summary"]
    ref = teachers.of_run(dict(run))
    acc = s.get("teacher_acc")
    if acc is None and ref is not None:
        acc = ref.test_acc
    if acc is None:
        return None
    arch = (ref.arch if ref else "") or s.get("teacher_arch") or run["config"].get("teacher") or "?"
    if ref is not None:
        key = (ref.source, ref.path, ref.run_id, arch)
        tag = ref.run_id[-6:] if ref.run_id else Path(ref.path).stem[:8] if ref.path else ref.source
        about = ref.describe()
    elif s.get("teacher_run") or s.get("teacher_source"):
        key = (s.get("teacher_source"), None, s.get("teacher_run"), arch)
        tag = (s.get("teacher_run") or "")[-6:] or s.get("teacher_source")
        about = s.get("teacher_source") or f"run {s['teacher_run']}"
    else:   # nothing recorded but its accuracy: the same architecture and accuracy is the same teacher
        key, tag, about = ("unrecorded", None, None, arch, acc), run["id"][-6:], "not recorded"
    return {"key": key, "arch": arch, "acc": acc, "about": about, "tag": tag}


def gap_rows(store: Store, run_ids: list[str]) -> list[dict]:
    """Each finished run's teacher, then each run's student: {label, run, acc, kind, ...} for the gap chart.
    kind: teacher | distilled | student alone. A student row carries its own teacher (`teacher`: that
    teacher row's label, `teacher_acc`), so runs with different teachers are each compared with theirs.
    Labels are short ("kd<br>cnn_tiny"), made unique."""
    found: dict[tuple, dict] = {}
    rows = []
    for rid in run_ids:
        run = store.get_run(rid)
        s, cfg = run["summary"], run["config"]
        if run["status"] != "completed" or s.get("test_acc") is None:
            continue
        t = run_teacher(run)
        if t is not None and t["key"] not in found:
            found[t["key"]] = {"label": f"teacher<br>{t['arch']}", "run": f"teacher of {run_label(run)}: {t['about']}",
                               "acc": t["acc"], "kind": "teacher", "tag": t["tag"]}
        alone = is_alone(run)
        what = "student alone" if alone else run["methods"] if run["methods"] != "none" else cfg.get("scheme")
        rows.append({"label": f"{what}<br>{cfg.get('student')}", "run": run_label(run), "acc": s["test_acc"],
                     "kind": "student alone" if alone else "distilled", "id": run["id"],
                     "teacher": found[t["key"]] if t else None, "teacher_acc": t["acc"] if t else None})
    teacher_rows = list(found.values())
    _unique(teacher_rows, lambda r: r.pop("tag"))
    _unique(rows, lambda r: r["id"][-6:])
    for r in rows:
        r["teacher"] = r["teacher"]["label"] if r["teacher"] else None
    for r in teacher_rows:
        r.pop("tag", None)
    return teacher_rows + rows


def _unique(rows: list[dict], tag) -> None:
    labels = [r["label"] for r in rows]
    for r in rows:
        t = tag(r)
        if labels.count(r["label"]) > 1:
            r["label"] += f" [{t}]"


def gap_closed(rows: list[dict]) -> float | None:
    """The fraction of the gap between the student alone and the teacher that distillation closed
    (1 = the distilled student matches the teacher, 0 = no better than alone); None if a part is missing.
    The teacher is the distilled run's own (its row's teacher_acc), else the first teacher row."""
    first = {}
    for r in rows:
        first.setdefault(r["kind"], r)
    d, a = first.get("distilled"), first.get("student alone")
    t = d.get("teacher_acc") if d is not None and d.get("teacher_acc") is not None else \
        first["teacher"]["acc"] if "teacher" in first else None
    if t is None or a is None or d is None or t <= a["acc"]:
        return None
    return (d["acc"] - a["acc"]) / (t - a["acc"])
