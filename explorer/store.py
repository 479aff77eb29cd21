"""The run store: SQLite (WAL) under KD_EXPLORER_HOME holding every run's config, status,
metrics and artifact paths. Many processes may read and write at once (the app, workers, CLI).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from .errors import is_disk_full
from . import store_queries as Q
from .store_queries import RunQuery, as_reaped as _as_reaped, decode as _decode  # noqa: F401  (for callers)
from .storefile import DAMAGE_FIX, StoreDamaged, StoreFile, StoreFull, schema_of  # noqa: F401  (errors re-exported)

STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
FINAL = ("completed", "failed", "cancelled", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, role TEXT, status TEXT NOT NULL,
    created REAL, updated REAL, started REAL, finished REAL,
    dataset TEXT, student TEXT, teacher TEXT, scheme TEXT, methods TEXT,
    config TEXT NOT NULL, summary TEXT DEFAULT '{}', message TEXT DEFAULT '',
    recipe_hash TEXT, teacher_run TEXT, teacher_ref TEXT, worker_pid INTEGER, device TEXT,
    cancel_requested INTEGER DEFAULT 0, run_dir TEXT,
    queued_at REAL, resume INTEGER DEFAULT 0      -- set by explorer.jobs: FIFO position, continue from checkpoint
);
CREATE INDEX IF NOT EXISTS runs_recipe ON runs(recipe_hash, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, scope TEXT NOT NULL, epoch INTEGER, step INTEGER,
    name TEXT NOT NULL, value REAL, time REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, scope);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL, kind TEXT, created REAL,
    PRIMARY KEY (run_id, name)
);
"""


def default_home() -> Path:
    """KD_EXPLORER_HOME, else data/home inside a source checkout, else ~/.kd-explorer."""
    env = os.environ.get("KD_EXPLORER_HOME")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo / "data" / "home"
    return Path.home() / ".kd-explorer"


def safe_name(name: str, max_len: int = 80) -> str:
    """A name safe for a file or folder: no separators, no '..', no control characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:max_len]
    return cleaned or "unnamed"


class Store:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else default_home()
        self.runs_dir = self.home / "runs"
        self.path = self.home / "runs.sqlite"
        self._file = StoreFile(self.path, self.home)   # storefile.py: opening, a full disk, damage
        if not (self.runs_dir.is_dir() and self._file.has_schema(_expected_schema())):
            try:   # new, or made by an older version: create what is missing (the only writes on opening)
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise (self._file.error(e) if is_disk_full(e) else e) from None
            with self._connect(write=True) as db:
                _create_schema(db)
        self._file.keep_reserve()

    def _connect(self, write: bool = False):
        return self._file.connect(write)

    def _tx(self):
        return self._file.transaction()

    # ------------------------------------------------------------------ runs
    def create_run(self, config: dict, status: str = "queued", recipe_hash: str | None = None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        methods = "+".join(m["key"] for m in config.get("methods", [])) or "none"
        now = time.time()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO runs (id, name, role, status, created, updated, dataset, student, teacher, scheme, "
                    "methods, config, recipe_hash, run_dir) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, config.get("name") or run_id, config.get("role", "distill"), status, now, now,
                     config.get("dataset"), config.get("student"), config.get("teacher"), config.get("scheme"),
                     methods, json.dumps(config), recipe_hash, str(run_dir)))
        except BaseException:   # not recorded (a full disk): no folder without a run
            run_dir.rmdir()
            raise
        return run_id

    def update_run(self, run_id: str, **fields) -> None:
        if "summary" in fields and not isinstance(fields["summary"], str):
            fields["summary"] = json.dumps(fields["summary"])
        if "config" in fields and not isinstance(fields["config"], str):
            fields["config"] = json.dumps(fields["config"])
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        fields["updated"] = time.time()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))

    def set_status(self, run_id: str, status: str, message: str | None = None, **fields) -> None:
        if status == "running":
            fields.setdefault("started", time.time())
        if status in FINAL:
            fields.setdefault("finished", time.time())
        if message is not None:
            fields["message"] = message
        self.update_run(run_id, status=status, **fields)

    def get_run(self, run_id: str) -> dict:
        dead = self.reap_dead_owners()
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=? OR name=? ORDER BY created DESC", (run_id, run_id)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}; `kd-explorer runs` lists them")
        return _as_reaped(_decode(row, self.path), dead)

    def list_runs(self, status: str | Iterable[str] | None = None, role: str | None = None) -> list[dict]:
        dead = self.reap_dead_owners()
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if role is not None:
            sql += " AND role=?"
            args.append(role)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY created", args).fetchall()
        runs = [_as_reaped(_decode(r, self.path), dead) for r in rows]
        return runs if status is None else [r for r in runs if r["status"] in statuses]

    def reap_dead_owners(self) -> dict[str, str]:
        """Mark interrupted the running runs whose owning process is gone (owners.reap; every reader
        calls it, so none depends on the app's start-up recovery). Returns {run_id: message}."""
        from .owners import reap
        return reap(self)

    def owned_running_runs(self) -> list[dict]:
        """Running runs with a recorded owner (explorer.owners judges them), with their last epoch ended."""
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT id, worker_pid, owner_start, owner_host, (SELECT MAX(epoch) FROM metrics m WHERE "
                "m.run_id=runs.id AND m.scope='epoch') AS last_epoch FROM runs WHERE status='running' "
                "AND owner_host IS NOT NULL").fetchall()]

    def find_completed(self, recipe_hash: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE recipe_hash=? AND status='completed' ORDER BY created DESC",
                             (recipe_hash,)).fetchone()
        return _decode(row, self.path) if row else None

    def request_cancel(self, run_id: str) -> None:
        self.update_run(self.get_run(run_id)["id"], cancel_requested=1)

    def cancel_requested(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM runs WHERE id=?", (run_id,)).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ the job queue (explorer.jobs)
    # A run is in the queue when queued with a queued_at; each change is one write transaction whose
    # WHERE clause re-checks the state, so racing workers and sessions never both act on one run.
    def claim_next(self, device: str, worker_pid: int) -> dict | None:
        """Take the oldest run queued for `device` and mark it running by `worker_pid` (its owner)."""
        from . import owners
        with self._tx() as db:
            row = db.execute("SELECT id FROM runs WHERE status='queued' AND device=? AND queued_at IS NOT NULL "
                             "ORDER BY queued_at, created LIMIT 1", (device,)).fetchone()
            if row is None:
                return None
            now = time.time()
            owner = owners.fields(worker_pid)
            db.execute("UPDATE runs SET status='running', worker_pid=?, owner_start=?, owner_host=?, started=?, "
                       "updated=? WHERE id=?", (worker_pid, owner["owner_start"], owner["owner_host"], now, now,
                                                row["id"]))
        return self.get_run(row["id"])

    def has_queued(self, device: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE status='queued' AND device=? AND queued_at IS NOT NULL "
                              "LIMIT 1", (device,)).fetchone() is not None

    def cancel_queued(self, run_id: str, message: str) -> bool:
        """Cancel the run if it is still waiting in the queue; False when it has started (or never queued)."""
        now = time.time()
        with self._tx() as db:
            return db.execute("UPDATE runs SET status='cancelled', message=?, finished=?, updated=? "
                              "WHERE id=? AND status='queued' AND queued_at IS NOT NULL",
                              (message, now, now, run_id)).rowcount > 0

    def requeue(self, run_id: str, device: str, statuses: Iterable[str]) -> bool:
        """Put a run with one of `statuses` back at the end of `device`'s queue, to resume from its checkpoint."""
        statuses = list(statuses)
        now = time.time()
        with self._tx() as db:
            return db.execute(
                "UPDATE runs SET status='queued', resume=1, cancel_requested=0, message='', worker_pid=NULL, "
                f"finished=NULL, device=?, queued_at=?, updated=? WHERE id=? AND status IN ({','.join('?' * len(statuses))})",
                (device, now, now, run_id, *statuses)).rowcount > 0

    def mark_interrupted(self, run_id: str, worker_pid: int | None, message: str) -> bool:
        """Mark a running run interrupted, unless it changed meanwhile (another status or another process)."""
        now = time.time()
        with self._tx() as db:
            return db.execute("UPDATE runs SET status='interrupted', message=?, finished=?, updated=? "
                              "WHERE id=? AND status='running' AND worker_pid IS ?",
                              (message, now, now, run_id, worker_pid)).rowcount > 0

    def delete_run(self, run_id: str) -> None:
        import shutil
        run = self.get_run(run_id)
        with self._tx() as db:
            for table, col in (("metrics", "run_id"), ("artifacts", "run_id"), ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (run["id"],))
        run_dir = Path(run["run_dir"] or "")
        if run_dir.is_dir() and run_dir.resolve().parent == self.runs_dir.resolve():
            shutil.rmtree(run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ metrics & artifacts
    def log_metrics(self, run_id: str, scope: str, epoch: int, step: int, values: dict[str, float]) -> None:
        now = time.time()
        rows = [(run_id, scope, epoch, step, k, float(v), now) for k, v in values.items()]
        with self._tx() as db:
            db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?)", rows)

    def delete_metrics_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics of epochs after `epoch`, and the final ones (a resumed run redoes them)."""
        with self._tx() as db:
            db.execute("DELETE FROM metrics WHERE run_id=? AND ((scope='epoch' AND epoch>?) OR "
                       "(scope='step' AND epoch>=?) OR scope='final')", (run_id, epoch + 1, epoch + 1))

    def metrics(self, run_id: str, scope: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM metrics WHERE run_id=?", [run_id]
        if scope:
            sql += " AND scope=?"
            args.append(scope)
        with self._connect() as db:
            return [dict(r) for r in db.execute(sql + " ORDER BY rowid", args).fetchall()]

    def add_artifact(self, run_id: str, name: str, path: str | Path, kind: str = "file") -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)", (run_id, name, str(path), kind, time.time()))

    def artifacts(self, run_id: str) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY created", (run_id,)).fetchall()
        return {r["name"]: r["path"] for r in rows}

    # ------------------------------------------------------------------ listing (store_queries.py: SQL paging)
    def query_runs(self, query: RunQuery | None = None, **filters) -> list[dict]:
        """The runs matching a RunQuery (or its fields as keywords), filtered, sorted and paged in SQL."""
        return Q.query_runs(self, query or RunQuery(**filters))

    def count_runs(self, query: RunQuery | None = None, **filters) -> int:
        """How many runs match (the query's limit and offset aside); no arguments: every run."""
        return Q.count_runs(self, query or (RunQuery(**filters) if filters else None))

    def distinct(self, column: str) -> list[str]:
        """The values of dataset, student, scheme, status or role present in the store, sorted."""
        return Q.distinct(self, column)

    # ------------------------------------------------------------------ notebook views
    def runs_df(self):
        return Q.runs_df(self)

    def metrics_df(self, run_ids: str | Iterable[str], scope: str = "epoch"):
        """Long format: run, epoch, step, name, value (pivot for wide)."""
        return Q.metrics_df(self, run_ids, scope)


def _create_schema(db: sqlite3.Connection) -> None:
    """Create the tables, and add the columns an older store lacks (idempotent; safe in racing processes)."""
    # WAL is a property of the file, set once; switching needs a moment with no other connection,
    # and sqlite answers "locked" at once (no busy wait) when several processes open a new store together
    _retry_locked(lambda: db.execute("PRAGMA journal_mode").fetchone()[0].lower() in ("wal", "memory")
                  or db.execute("PRAGMA journal_mode=WAL"))
    _retry_locked(lambda: db.executescript(_SCHEMA))
    try:   # the listing's indexes (an older store gets them here); without them it is slower, not wrong
        _retry_locked(lambda: db.executescript(Q.INDEXES))
    except sqlite3.OperationalError as e:
        if not any(t in str(e).lower() for t in ("readonly", "disk is full", "disk i/o")):
            raise
    have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    for col, decl in (("queued_at", "REAL"), ("resume", "INTEGER DEFAULT 0"),   # stores made before jobs
                      ("teacher_ref", "TEXT"),                                 # ... and before teachers.py
                      ("owner_start", "REAL"), ("owner_host", "TEXT")):        # ... and before owners.py
        if col not in have:
            try:
                db.execute(f"ALTER TABLE runs ADD COLUMN {col} {decl}")
            except sqlite3.OperationalError:   # another process added it first
                pass


_EXPECTED: dict[str, set[str]] = {}


def _expected_schema() -> dict[str, set[str]]:
    """What _create_schema makes, read off an in-memory database (so a new column can never be missed)."""
    if not _EXPECTED:
        db = sqlite3.connect(":memory:", isolation_level=None)
        try:
            _create_schema(db)
            _EXPECTED.update(schema_of(db))
        finally:
            db.close()
    return _EXPECTED


def _retry_locked(action, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
