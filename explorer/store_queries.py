"""Listing the run store (explorer/store.py's Store.query_runs, count_runs, distinct): filters, sort and
paging done in SQL, so a page of the Runs table or `kd-explorer runs` reads only the rows it shows, even
with thousands of runs; and the decoding of a run's row, which every reader shares.

    q = RunQuery(statuses=("completed",), datasets=("digits",), methods=("kd",), search="grid",
                 sort="test_acc", descending=True, limit=50, offset=100)
    store.query_runs(q)     # those 50 runs, decoded (config, summary), as Store.get_run returns them
    store.count_runs(q)     # how many match, whatever the limit

`methods` are the tokens of a run's methods label (explorer.app.runs.methods_label: "kd+at",
"takd + kd", "dml", "none"): a knowledge term's key, a scheme's name, or "none" (the student alone);
a run matches if its label has any of them. `plain_schemes` names the schemes whose label is their own
name (they take no knowledge terms); the store knows no registry, so the caller says which.
Imports nothing from the package but storefile, so the store can use it.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .storefile import DAMAGE_FIX, StoreDamaged

# what the listing filters and sorts on (created by Store's schema; an older store file gets them on opening)
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created);
CREATE INDEX IF NOT EXISTS runs_dataset ON runs(dataset, created);
CREATE INDEX IF NOT EXISTS runs_student ON runs(student, created);
CREATE INDEX IF NOT EXISTS runs_scheme ON runs(scheme, created);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name);
"""

_SCHEME = "COALESCE(NULLIF(scheme, ''), 'offline')"
_TERMS = "COALESCE(NULLIF(methods, ''), 'none')"
_ACC = "(CASE WHEN json_valid(summary) THEN json_extract(summary, '$.{}') END)"   # NaN in a summary: no value
SORTS = ("created", "name", "status", "dataset", "scheme", "methods", "student", "test_acc", "seconds")


@dataclass(frozen=True)
class RunQuery:
    statuses: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()      # "offline" also matches runs recorded without one
    students: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()      # methods-label tokens (see above)
    names: tuple[str, ...] = ()
    search: str = ""                   # in the name, id, dataset, student, teacher, scheme, methods or message
    role: str | None = None
    not_role: str | None = None        # e.g. "teacher": not the teachers trained for other runs
    alone: bool | None = None          # True: only students alone (offline, no terms); False: none of them
    plain_schemes: tuple[str, ...] = ()
    sort: str = "created"              # one of SORTS
    descending: bool = True
    limit: int | None = None
    offset: int = 0


def _in(expr: str, values, args: list) -> str:
    args += list(values)
    return f"{expr} IN ({','.join('?' * len(values))})"


def _label(plain: tuple[str, ...], args: list) -> str:
    """The SQL of explorer.app.runs.methods_label over the scheme and methods columns."""
    first = _in(_SCHEME, plain, args) if plain else "0"
    return (f"(CASE WHEN {first} THEN {_SCHEME} WHEN {_SCHEME} = 'offline' THEN {_TERMS} "
            f"WHEN {_TERMS} = 'none' THEN {_SCHEME} ELSE {_SCHEME} || ' + ' || {_TERMS} END)")


def _status(dead: dict[str, str], args: list) -> str:
    """The status readers see: interrupted where the owner died, even if that could not be recorded."""
    if not dead:
        return "status"
    return f"(CASE WHEN status = 'running' AND {_in('id', list(dead), args)} THEN 'interrupted' ELSE status END)"


def where(q: RunQuery, dead: dict[str, str]) -> tuple[str, list]:
    """The WHERE clause of `q` and its arguments."""
    parts, args = ["1=1"], []
    if q.statuses:
        parts.append(f"{_status(dead, args)} IN ({','.join('?' * len(q.statuses))})")
        args += list(q.statuses)
    for col, values in (("dataset", q.datasets), ("student", q.students), ("name", q.names)):
        if values:
            parts.append(_in(col, values, args))
    if q.schemes:
        parts.append(_in(_SCHEME, q.schemes, args))
    if q.methods:
        ors = []
        for token in q.methods:   # the label "scheme + a+b" has the tokens scheme, a, b (offline: a, b only)
            args.append(token)
            plain = _in(_SCHEME, q.plain_schemes, args) if q.plain_schemes else "0"
            args.append(token)
            ors.append(f"({_SCHEME} = ? AND {_SCHEME} != 'offline') OR (NOT {plain} AND instr('+' || {_TERMS} || "
                       f"'+', '+' || ? || '+') > 0 AND NOT ({_SCHEME} != 'offline' AND {_TERMS} = 'none'))")
        parts.append("(" + " OR ".join(f"({o})" for o in ors) + ")")
    if q.search.strip():
        text = q.search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        cols = " || ' ' || ".join(f"COALESCE({c}, '')" for c in ("name", "id", "dataset", "student", "teacher",
                                                                  "scheme", "methods", "message"))
        parts.append(f"({cols}) LIKE ? ESCAPE '\\'")
        args.append(f"%{text}%")
    if q.role is not None:
        parts.append("role = ?")
        args.append(q.role)
    if q.not_role is not None:
        parts.append("COALESCE(role, 'distill') != ?")
        args.append(q.not_role)
    if q.alone is not None:
        parts.append(("" if q.alone else "NOT ") + f"({_SCHEME} = 'offline' AND {_TERMS} = 'none')")
    return " AND ".join(parts), args


def order(q: RunQuery, dead: dict[str, str]) -> tuple[str, list]:
    """ORDER BY: the sort column with no value last (as pandas sorts), then the newest first."""
    if q.sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, not {q.sort!r}")
    args: list = []
    expr = {"status": lambda: _status(dead, args), "scheme": lambda: _SCHEME,
            "methods": lambda: _label(q.plain_schemes, args), "test_acc": lambda: _ACC.format("test_acc"),
            "seconds": lambda: _ACC.format("seconds")}.get(q.sort, lambda: q.sort)()
    way = "DESC" if q.descending else "ASC"
    if q.sort == "created":
        return f"created {way}, rowid {way}", args
    again = list(args)   # the expression appears twice: its arguments too
    return f"({expr}) IS NULL, {expr} {way}, created DESC, rowid DESC", args + again


def query_runs(store, q: RunQuery) -> list[dict]:
    dead = store.reap_dead_owners()
    cond, args = where(q, dead)
    by, more = order(q, dead)
    sql = f"SELECT * FROM runs WHERE {cond} ORDER BY {by}"
    if q.limit is not None or q.offset:
        sql += f" LIMIT {int(q.limit if q.limit is not None else -1)} OFFSET {int(q.offset)}"
    with store._connect() as db:
        rows = db.execute(sql, args + more).fetchall()
    return [as_reaped(decode(r, store.path), dead) for r in rows]


def count_runs(store, q: RunQuery | None = None) -> int:
    dead = store.reap_dead_owners() if q is not None and q.statuses else {}
    cond, args = where(q or RunQuery(), dead)
    with store._connect() as db:
        return db.execute(f"SELECT COUNT(*) FROM runs WHERE {cond}", args).fetchone()[0]


DISTINCT = {"dataset": "dataset", "student": "student", "scheme": _SCHEME, "status": "status", "role": "role"}


def distinct(store, column: str) -> list[str]:
    """The values a column takes in the store, sorted (for the filters' choices)."""
    expr = DISTINCT[column]
    with store._connect() as db:
        return [r[0] for r in db.execute(f"SELECT DISTINCT {expr} FROM runs WHERE {expr} IS NOT NULL "
                                         f"ORDER BY 1").fetchall()]


# ---------------------------------------------------------------------- decoding rows (every reader)
def as_reaped(run: dict, dead: dict[str, str]) -> dict:
    """The run as readers see it: interrupted if its owner died (even where the store could not record that)."""
    if run["status"] == "running" and run["id"] in dead:
        run.update(status="interrupted", message=dead[run["id"]])
    return run


def decode(row: sqlite3.Row, path: Path | None = None) -> dict:
    d = dict(row)
    try:
        d["config"] = json.loads(d["config"]) if d.get("config") else {}
        d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
    except ValueError as e:   # bytes changed inside a record that sqlite itself still reads
        raise StoreDamaged(f"the run store {path} is damaged: the record of run {d.get('id')!r} is not valid "
                           f"({e}). Fix: {DAMAGE_FIX}") from None
    return d


def flat_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


# ---------------------------------------------------------------------- `kd-explorer runs` (no pandas: it answers fast)
LISTED = ("id", "name", "role", "status", "dataset", "teacher", "student", "scheme", "methods", "created", "message")


def records(runs: list[dict]) -> list[dict]:
    """runs_df's rows as plain records: every column in each (None where a run lacks it), `created` in ISO
    (UTC, milliseconds), non-finite numbers as None: what runs_df().to_json(orient="records") gave."""
    import datetime
    import math
    rows = [{k: r[k] for k in LISTED} | flat_summary(r["summary"]) for r in runs]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    utc = datetime.timezone.utc
    for row in rows:
        if row["created"] is not None:
            # pandas' float-seconds rule (whole seconds, then the fraction rounded to ns, truncated to ms):
            # fromtimestamp rounds to µs first and disagreed with it on ~1 row in 2,300
            whole = int(row["created"])
            ms = (whole * 10**9 + int(round(row["created"] - whole, 9) * 1e9)) // 10**6
            stamp = datetime.datetime.fromtimestamp(ms // 1000, utc).strftime("%Y-%m-%dT%H:%M:%S")
            row["created"] = f"{stamp}.{ms % 1000:03d}"
        for k in keys:
            v = row.get(k)
            row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return [{k: row[k] for k in keys} for row in rows]


def text_table(rows: list[dict], columns: list[str]) -> str:
    """Aligned columns, numbers right-aligned (at most 4 decimals), blanks for no value."""
    def cell(v):
        return "" if v is None else f"{round(v, 4):g}" if isinstance(v, float) else str(v)
    cols = [c for c in columns if any(c in r for r in rows)]
    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    width = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    num = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in cols]
    line = lambda vals: "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, width, num)).rstrip()  # noqa: E731
    return "\n".join([line(cols)] + [line(row) for row in cells])


# ---------------------------------------------------------------------- notebook views (pandas)
def runs_df(store):
    import pandas as pd
    runs = store.list_runs()
    rows = [{k: r[k] for k in ("id", "name", "role", "status", "dataset", "teacher", "student", "scheme",
                               "methods", "created", "message")} | flat_summary(r["summary"]) for r in runs]
    df = pd.DataFrame(rows)
    if not df.empty:
        df["created"] = pd.to_datetime(df["created"], unit="s")
    return df


def metrics_df(store, run_ids, scope: str = "epoch"):
    """Long format: run, epoch, step, name, value (pivot for wide)."""
    import pandas as pd
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    frames = [pd.DataFrame(store.metrics(store.get_run(i)["id"], scope)) for i in ids]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["run_id", "scope", "epoch", "step", "name", "value", "time"])
    return pd.concat(frames, ignore_index=True)
