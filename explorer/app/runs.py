"""The Runs page's logic, with no Streamlit in it: the table, labels, compared curves, exports, and the
teacher-student gap, where each run is compared with the teacher it really had (explorer.teachers)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from .. import teachers
from ..schemes import get_scheme, list_schemes
from ..store import RunQuery, Store
from .datasets import dataset_meta

RUN_COLUMNS = ["name", "status", "dataset", "scheme", "methods", "student", "teacher", "test_acc", "teacher_acc",
               "role", "created", "id", "message"]
SORTS = {"created": "created", "test_acc": "test acc", "name": "name", "status": "status", "dataset": "dataset",
         "scheme": "scheme", "methods": "methods", "student": "student", "seconds": "training time"}   # store_queries.SORTS


# ---------------------------------------------------------------------- table, labels, compare, export
def run_query(datasets=None, statuses=None, methods=None, **more) -> RunQuery:
    """The store query of the Runs page's filters (dataset, status, method: any of the given; scheme, student,
    search, sort, limit, offset: RunQuery's); filtered, sorted and paged in SQL (explorer.store_queries)."""
    plain = tuple(k for k in list_schemes() if not get_scheme(k).uses_methods)   # labelled by their name
    return RunQuery(datasets=tuple(datasets or ()), statuses=tuple(statuses or ()), methods=tuple(methods or ()),
                    plain_schemes=plain, **{k: tuple(v) if isinstance(v, list) else v for k, v in more.items()})


def runs_table(store: Store, datasets=None, statuses=None, methods=None, **more) -> pd.DataFrame:
    """The Runs page's table, newest first (or by `sort`), filtered by dataset, status and method (any of the
    given), and by run_query's other filters; every match, or the page `limit`/`offset` asks for."""
    return table_of(store.query_runs(run_query(datasets, statuses, methods, **more)))


def table_of(runs: list[dict]) -> pd.DataFrame:
    """The table's rows of these runs (in their order), with the methods label and the teacher each really had."""
    rows = []
    for r in runs:
        flat = {k: v for k, v in r["summary"].items() if isinstance(v, (int, float, str, bool)) or v is None}
        t = run_teacher(r)   # the teacher it really used (teachers.of_run), blank where it had none (DML, BYOT, ...)
        rows.append({**{k: r.get(k) for k in RUN_COLUMNS}, "test_acc": flat.get("test_acc"),
                     "methods": methods_label(r), "teacher": f"{t['arch']} ({t['about']})" if t else None,
                     "teacher_acc": t["acc"] if t else None})
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if not df.empty:
        df["created"] = pd.to_datetime(df["created"], unit="s")
    return df


def _scheme(key: str | None):
    try:
        return get_scheme(key or "offline")
    except (KeyError, ValueError):
        return None


def methods_label(run: Mapping) -> str:
    """What a run distilled with, per scheme: its knowledge terms where the scheme uses them ("kd+at";
    "none" for the student alone), else the scheme's own loss ("dml", "byot", "dafl", ...)."""
    cfg = run.get("config") or {}
    scheme = cfg.get("scheme") or run.get("scheme") or "offline"
    terms = "+".join(m["key"] for m in cfg.get("methods", []) if isinstance(m, Mapping)) or run.get("methods") or "none"
    cls = _scheme(scheme)
    if cls is not None and not cls.uses_methods:
        return scheme
    if scheme == "offline" or terms == "none":
        return terms if scheme == "offline" else scheme
    return f"{scheme} + {terms}"


def had_teacher(run: Mapping) -> bool:
    """Whether the run's scheme trains against a teacher (DML, KDCL, ONE and the self-KD schemes do not)."""
    cls = _scheme((run.get("config") or {}).get("scheme") or run.get("scheme"))
    return cls is None or cls.needs_teacher


def default_compare(store: Store) -> list[str]:
    """The Runs page's default comparison: the last launched group -- the newest finished run and its
    student-alone partner (the Train page names it "NAME · student alone"), else the newest run alone
    with the same dataset and student. Reads only those runs (and the few the store offers as partners)."""
    done = dict(statuses=("completed",), not_role="teacher")
    found = store.query_runs(RunQuery(**done, limit=1))
    if not found:
        return []
    last = found[0]
    if is_alone(last):
        name = (last.get("name") or "").removesuffix(" · student alone")
    else:
        name = f"{last.get('name')} · student alone"
    partner = _first_other(store, last, RunQuery(**done, names=(name,)), lambda r: r.get("name") == name) or \
        _first_other(store, last, RunQuery(**done, datasets=(last["dataset"],), students=(last["student"],),
                                           alone=not is_alone(last)),
                     lambda r: r["config"].get("dataset") == last["config"].get("dataset")
                     and r["config"].get("student") == last["config"].get("student"))
    return [last["id"]] + ([partner["id"]] if partner is not None else [])


def _first_other(store: Store, last: dict, query: RunQuery, ok, page: int = 50) -> dict | None:
    """The newest run of `query` other than `last`, alone where `last` is not (and not where it is), passing `ok`."""
    for offset in range(0, store.count_runs(query), page):
        for r in store.query_runs(replace(query, limit=page, offset=offset)):
            if r["id"] != last["id"] and is_alone(r) != is_alone(last) and ok(r):
                return r
    return None


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
    if not had_teacher(run):
        return None
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
    runs = [r for r in map(store.get_run, run_ids) if r["status"] == "completed" and r["summary"].get("test_acc")
            is not None]
    # a student alone never learns from a teacher: its teacher is shown only as the reference of a distilled
    # run that had one (not beside DML, BYOT, ... which had none)
    reference = any(not is_alone(r) and run_teacher(r) is not None for r in runs) or all(map(is_alone, runs))
    for run in runs:
        s, cfg = run["summary"], run["config"]
        t = run_teacher(run) if reference or not is_alone(run) else None
        if t is not None and t["key"] not in found:
            found[t["key"]] = {"label": f"teacher<br>{t['arch']}", "run": f"teacher of {run_label(run)}: {t['about']}",
                               "acc": t["acc"], "kind": "teacher", "tag": t["tag"]}
        alone = is_alone(run)
        what = "student alone" if alone else methods_label(run)
        rows.append({"label": f"{what}<br>{cfg.get('student')}", "run": run_label(run), "acc": s["test_acc"],
                     "kind": "student alone" if alone else "distilled", "id": run["id"],
                     "teacher": found[t["key"]] if t else None, "teacher_acc": t["acc"] if t else None})
        rows += produced_rows(run, what, t)
    teacher_rows = list(found.values())
    _unique(teacher_rows, lambda r: r.pop("tag"))
    _unique(rows, lambda r: r["id"][-6:])
    for r in rows:
        r["teacher"] = r["teacher"]["label"] if r["teacher"] else None
    for r in teacher_rows:
        r.pop("tag", None)
    return teacher_rows + rows


PRODUCED_KINDS = ("peer", "ensemble", "assistant")


def produced_rows(run: Mapping, what: str, teacher: dict | None = None) -> list[dict]:
    """What a scheme produced besides its student, from the summary's test_acc/<name> (eval_models): DML/KDCL/ONE
    every other peer and the ensemble, TAKD the assistant, multi-teacher each further teacher, BYOT's heads.
    kind: peer | ensemble | assistant | teacher; no teacher_acc (no gap is claimed for them)."""
    s = run["summary"]
    names = [k.split("/", 1)[1] for k in s if k.startswith("test_acc/") and isinstance(s[k], (int, float))]
    rows = []
    for name in names[1:]:   # the first is the student
        if name.startswith("teacher_") and teacher is not None and name[8:] == teacher["arch"]:
            continue         # the run's own teacher: already its teacher bar
        kind = ("ensemble" if name == "ensemble" else "assistant" if name == "assistant"
                else "teacher" if name.startswith("teacher_") and name != "teacher_self" else "peer")
        rows.append({"label": f"{what}: {name}<br>{run['config'].get('student') if kind != 'teacher' else name[8:]}",
                     "run": f"{run_label(run)} · {name}", "acc": s[f"test_acc/{name}"], "kind": kind,
                     "id": f"{run['id']}/{name}", "teacher": None, "teacher_acc": None})
    return rows


def _unique(rows: list[dict], tag) -> None:
    labels = [r["label"] for r in rows]
    for r in rows:
        t = tag(r)
        if labels.count(r["label"]) > 1:
            r["label"] += f" [{t}]"


def gap_closed(rows: list[dict]) -> float | None:
    """The fraction of the gap between the student alone and the teacher that distillation closed
    (1 = the distilled student matches the teacher, 0 = no better than alone); None if a part is missing.
    The teacher is the distilled run's own (its row's teacher_acc); a row that says it had none (teacher_acc
    None: DML, BYOT, ...) closed no gap; rows without that key fall back to the first teacher row."""
    first = {}
    for r in rows:
        first.setdefault(r["kind"], r)
    d, a = first.get("distilled"), first.get("student alone")
    t = d.get("teacher_acc") if d is not None and "teacher_acc" in d else \
        first["teacher"]["acc"] if "teacher" in first else None
    if t is None or a is None or d is None or t <= a["acc"]:
        return None
    return (d["acc"] - a["acc"]) / (t - a["acc"])


# ---------------------------------------------------------------------- what a scheme produced, beyond accuracies
def scheme_outputs(store: Store, run: Mapping) -> dict:
    """What the Train and Runs pages show for a run besides its accuracy, per scheme: "weights" (multi-teacher:
    the epoch metrics teacher_weight/<arch>), "synth" (data-free: load_synthesised's dict), "views"
    (cross-modal: {"full", "view", "name", "labels"} from the run's probe samples). Only what exists."""
    scheme = (run.get("config") or {}).get("scheme") or "offline"
    out: dict = {}
    if run.get("status") != "completed":
        return out
    m = store.metrics_df([run["id"]], "epoch")
    if not m.empty and m["name"].str.startswith("teacher_weight/").any():
        out["weights"] = m
    if scheme in ("dafl", "deepinversion"):
        from ..schemes.data_free import load_synthesised
        try:
            out["synth"] = load_synthesised(dict(run), store)
        except FileNotFoundError:
            pass
    if scheme == "crossmodal":
        from ..analysis.probes import list_probes, load_probe
        from ..schemes.cross_modal import View
        found = list_probes(run["run_dir"])
        if found:
            import torch
            probe = load_probe(found[-1][1])
            meta = dataset_meta(run["config"]["dataset"], run["config"].get("data_root"))
            x = probe["x"][:6].float()
            c = x.shape[1]
            mean, std = torch.tensor(meta["mean"]).view(1, c, 1, 1), torch.tensor(meta["std"]).view(1, c, 1, 1)
            name = (run["config"].get("scheme_params") or {}).get("student_view", "edges")
            with torch.no_grad():
                view = View(name, 1.0 / (255.0 * std), -mean / std)(x)
            labels = [meta["classes"][int(k)] for k in probe["y"][:6]]
            out["views"] = {"full": x, "view": view, "name": name, "labels": labels, "mean": meta["mean"],
                            "std": meta["std"]}
    return out
