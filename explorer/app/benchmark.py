"""Published results beside the user's own runs, with no Streamlit in it: the method panels' lines (Home,
Train) and the Benchmark page's table (published figure, its source and protocol, and the user's finished
runs of the same method, pair and dataset from the store, with whether they followed the protocol)."""
from __future__ import annotations

import statistics
from typing import Mapping

import pandas as pd

from ..bench import protocol as P
from ..published import published, published_baselines, published_line, same_variant
from ..store import Store

TABLE_COLUMNS = ["method", "variant", "teacher", "student", "published (%)", "your runs", "yours (%)",
                 "yours, CRD protocol (%)", "protocol", "reported", "seeds", "source", "url"]


def _term(run: Mapping) -> tuple[str, dict] | None:
    """(method key, its params) of a run with exactly one knowledge term under the offline scheme; ('none', {})
    for the student alone; None for anything else (several terms, other schemes, teachers)."""
    cfg = run.get("config") or {}
    if cfg.get("role", "distill") != "distill" or (cfg.get("scheme") or "offline") != "offline":
        return None
    terms = [m for m in cfg.get("methods") or [] if isinstance(m, Mapping)]
    if not terms:
        return "none", {}
    return (terms[0]["key"], dict(terms[0].get("params") or {})) if len(terms) == 1 else None


def _acc(run: Mapping) -> float | None:
    acc = (run.get("summary") or {}).get("test_acc")
    return None if acc is None else 100.0 * float(acc)


def follows_protocol(cfg: Mapping) -> bool:
    """Whether a run's config used the CIFAR-100 benchmark protocol's recipe (bench.protocol.recipe)."""
    r = P.recipe()
    return cfg.get("dataset") == P.DATASET and all(cfg.get(k) == v for k, v in r.items() if k != "lr") \
        and cfg.get("lr") in (r["lr"], P.SMALL_LR) and not cfg.get("n_train")


def user_runs(store: Store, method: str, dataset: str | None = None, teacher: str | None = None,
              student: str | None = None, params: dict | None = None) -> list[dict]:
    """The user's completed runs of one method (one knowledge term; 'none' = the student alone), filtered by
    dataset and pair, and by the published variant's switches where given."""
    out = []
    for run in store.list_runs(status="completed"):
        t = _term(run)
        cfg = run.get("config") or {}
        if t is None or t[0] != method or _acc(run) is None:
            continue
        if (dataset and cfg.get("dataset") != dataset) or (teacher and cfg.get("teacher") != teacher) or \
                (student and cfg.get("student") != student):
            continue
        if params is not None and not same_variant(t[1], params):
            continue
        out.append(run)
    return out


def _mean(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def method_panel(store: Store, method: str) -> dict:
    """What the method panels show: the published figures (one cited line each) and the user's own runs of
    the method, grouped by dataset and pair."""
    groups: dict[tuple, list[float]] = {}
    for run in user_runs(store, method):
        cfg = run["config"]
        groups.setdefault((cfg.get("dataset"), cfg.get("teacher"), cfg.get("student")), []).append(_acc(run))
    yours = [f"yours: {_mean(v)} % ({d}, {t}→{s}, {len(v)} run{'s' * (len(v) > 1)})" for (d, t, s), v in groups.items()]
    return {"published": [published_line(r) for r in published(method=method)], "yours": yours}


def benchmark_table(store: Store, dataset: str = P.DATASET) -> pd.DataFrame:
    """The published table (baselines first), each row beside the user's completed runs of the same method,
    variant, pair and dataset: all of them, and those that followed the protocol's recipe."""
    rows = []
    for r in published_baselines(dataset) + published(dataset):
        if r["method"] is None:
            if r["label"] == "student alone":
                method, params = "none", {}
            else:   # the teacher: the user's teacher runs of that architecture
                method, params = "teacher", None
        else:
            method, params = r["method"], r["params"]
        if method == "teacher":
            runs = [x for x in store.list_runs(status="completed", role="teacher")
                    if (x.get("config") or {}).get("dataset") == dataset
                    and (x.get("config") or {}).get("student") == r["teacher"] and _acc(x) is not None]
        else:
            runs = user_runs(store, method, dataset, r["teacher"], r["student"], params)
        if r.get("optimizer", "sgd") != "sgd":   # DOT: only runs with that optimiser
            runs = [x for x in runs if x["config"].get("optimizer") == r["optimizer"]]
        elif method not in ("teacher",):
            runs = [x for x in runs if x["config"].get("optimizer", "sgd") == "sgd"]
        accs = [_acc(x) for x in runs]
        proto = [_acc(x) for x in runs if follows_protocol(x["config"])]
        rows.append({"method": r["method"] or method, "variant": r["label"], "teacher": r["teacher"],
                     "student": r["student"], "published (%)": r["top1"], "your runs": len(accs),
                     "yours (%)": _mean(accs), "yours, CRD protocol (%)": _mean(proto), "protocol": r["protocol"],
                     "reported": r["reported"], "seeds": r["seeds"], "source": r["source"], "url": r["url"]})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
