"""The run store's file, below the SQL (explorer/store.py): how it is opened, read and written when
things go wrong.

- An existing store is opened without writing: a reader that cannot set up sqlite's shared-memory
  index (a full disk, a read-only folder) reads the file as it is instead (`immutable`, WAL included).
- A full disk: a RESERVE_BYTES file under home is given up when a write finds less than
  WRITE_ROOM_BYTES free, so a run's final status is still recorded; it comes back when there is room.
- A full disk or a damaged file becomes a StoreError naming the path and the fix; sqlite's other errors
  (locked, busy, ...) pass unchanged. StoreFull / StoreDamaged are sqlite3 errors too, for old handlers.
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError, disk_full_message, free_space, is_disk_full

RESERVE_NAME = ".space-reserve"   # under home: given up when the disk is nearly full, so a run's end is still recorded
RESERVE_BYTES = 512 << 10
WRITE_ROOM_BYTES = 256 << 10      # a write with less than this free gives up the reserve first
SQLITE_HEADER = b"SQLite format 3\0"
_READ_FALLBACK = ("disk i/o", "disk is full", "unable to open", "readonly")   # a reader then opens it immutable
_DAMAGE = ("malformed", "not a database", "file is encrypted", "corrupt", "could not decode")
DAMAGE_FIX = ("`kd-explorer doctor` checks it and every run's files; `kd-explorer doctor --repair` moves it aside "
              "(kept as runs.sqlite.broken-<time>) and starts a fresh store with every row still readable.")


class StoreFull(StoreError, sqlite3.OperationalError):
    """The store's disk is full: nothing can be written (reading still works)."""


class StoreDamaged(StoreError, sqlite3.DatabaseError):
    """The store file is not a database, or is torn: `kd-explorer doctor` checks it, `--repair` moves it aside."""


class StoreFile:
    def __init__(self, path: Path, home: Path):
        self.path, self.home = path, home
        self.reserve = home / RESERVE_NAME

    def has_schema(self, expected: dict[str, set[str]]) -> bool:
        """The file is an SQLite database in WAL mode with every table, column and index of `expected`."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(20)
        except OSError:
            return False
        if header[:16] != SQLITE_HEADER or header[18:20] != b"\2\2":
            return False   # new, not in WAL mode yet, or not a database (creating it then says which)
        with self.connect() as db:
            have = schema_of(db)
        return all(cols <= have.get(name, set()) for name, cols in expected.items())

    @contextmanager
    def connect(self, write: bool = False):
        db = None
        try:
            db = self._open()
            if not write:
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            if write or not any(t in str(e).lower() for t in _READ_FALLBACK):
                raise self.error(e) from None
            db = self._open(immutable=True)
        try:
            yield db
        except sqlite3.DatabaseError as e:
            err = self.error(e)
            if err is e:
                raise
            raise err from None
        finally:
            db.close()

    @contextmanager
    def transaction(self):
        self.make_room()
        with self.connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:   # a failed COMMIT (a full disk) may have rolled back already
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    def _open(self, immutable: bool = False) -> sqlite3.Connection:
        if immutable:   # no locks, no -shm: nothing is written (the WAL's contents are still read)
            db = sqlite3.connect(self.path.resolve().as_uri() + "?immutable=1", uri=True, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA busy_timeout=60000")
        db.row_factory = sqlite3.Row
        return db

    def error(self, e: Exception) -> Exception:
        """A full disk or a damaged file as a StoreError naming the path and what to do; others unchanged."""
        if is_disk_full(e, self.home):
            return StoreFull(f"the run store {self.path} cannot be written: {disk_full_message(self.home)}. "
                             "Reading still works (kd-explorer runs, kd-explorer show, the app).")
        if any(t in str(e).lower() for t in _DAMAGE):
            return StoreDamaged(f"the run store {self.path} is damaged ({str(e)[:200]}). Fix: {DAMAGE_FIX}")
        return e

    def keep_reserve(self) -> None:
        """Keep RESERVE_BYTES of the disk for the writes that must happen (a run's final status); written
        only while there is ample room, of random bytes (a compressing filesystem keeps them whole)."""
        if self.reserve.exists():
            return
        space = free_space(self.home)
        if space is None or space[0] < 4 * RESERVE_BYTES:
            return
        tmp = self.reserve.with_name(f"{RESERVE_NAME}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(os.urandom(RESERVE_BYTES))
            os.replace(tmp, self.reserve)
        except OSError:
            tmp.unlink(missing_ok=True)

    def make_room(self) -> None:
        space = free_space(self.home)
        if space is not None and space[0] < WRITE_ROOM_BYTES:
            self.reserve.unlink(missing_ok=True)


def schema_of(db: sqlite3.Connection) -> dict[str, set[str]]:
    """{table: its columns} and {index name: {"index"}} of a database."""
    found = {}
    for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index')").fetchall():
        found[name] = ({r[1] for r in db.execute(f"PRAGMA table_info({name})")} if kind == "table" else {"index"})
    return found


# ---------------------------------------------------------------------- for `kd-explorer doctor`
def read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes to the file: a damaged store must stay as it was found."""
    return sqlite3.connect(path.resolve().as_uri() + "?immutable=1", uri=True)


def integrity(path: Path, tables: tuple[str, ...]) -> list[str]:
    """sqlite's integrity_check of the file, and the tables it lacks ([] when healthy)."""
    try:
        db = read_only(path)
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)").fetchall()]
            have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        return [f"unreadable: {e}"]
    if rows != ["ok"]:
        return [f"integrity_check: {r}" for r in rows]
    missing = [t for t in tables if t not in have]
    if missing:
        return [f"no table {', '.join(missing)}: not a KD Explorer store"]
    problems = []   # sqlite's structure is sound: are the records themselves (text, JSON)?
    for table in tables:
        try:
            for _ in _rows(path, table, problem=problems.append):
                pass
        except sqlite3.DatabaseError as e:
            problems.append(f"table {table}: unreadable ({e})")
    return problems[:20]


def runs_and_artifacts(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The run ids and (run id, artifact path) pairs of a store, read-only; empty where unreadable."""
    try:
        db = read_only(path)
        try:
            return ([r[0] for r in db.execute("SELECT id FROM runs")],
                    [(r[0], r[1]) for r in db.execute("SELECT run_id, path FROM artifacts")])
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return [], []


JSON_COLUMNS = {"runs": ("config", "summary")}


def _rows(path: Path, table: str, columns=None, problem=None):
    """(columns, row) of every record of `table` whose text is UTF-8 and whose JSON parses, up to the
    first unreadable page (sqlite3.DatabaseError); a bad record is told to `problem` and skipped."""
    src = read_only(path)
    try:
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        cols = [c for c in cols if columns is None or c in columns]
        src.text_factory = bytes   # decoded here, so one garbled record does not end the scan
        for n, raw in enumerate(src.execute(f"SELECT {', '.join(cols)} FROM {table}")):
            try:
                row = [v.decode() if isinstance(v, bytes) else v for v in raw]
                for c in JSON_COLUMNS.get(table, ()):
                    if c in cols and row[cols.index(c)]:
                        json.loads(row[cols.index(c)])
            except ValueError as e:
                if problem is not None:
                    problem(f"table {table}, record {n + 1}: damaged ({str(e)[:120]})")
                continue
            yield cols, row
    finally:
        src.close()


def salvage(broken: Path, dest: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Copy every sound record still readable from `broken` (read-only) into the store at `dest`."""
    kept = {t: 0 for t in tables}
    dst = sqlite3.connect(dest, timeout=60)
    try:
        with dst:   # one transaction, committed at the end
            for table in tables:
                want = {r[1] for r in dst.execute(f"PRAGMA table_info({table})")}
                try:
                    for cols, row in _rows(broken, table, want):
                        sql = (f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) "
                               f"VALUES ({', '.join('?' * len(cols))})")
                        kept[table] += dst.execute(sql, row).rowcount
                except sqlite3.DatabaseError:   # the rest of this table is unreadable
                    continue
    finally:
        dst.close()
    return kept
