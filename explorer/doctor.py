"""`kd-explorer doctor`: check the run store and every run's files, and with --repair move a broken
store aside (kept as runs.sqlite.broken-<time>, with what could still be read copied into a fresh one).

Reads the store without the Store class (which refuses a damaged file) and without writing to it
(storefile.py holds the SQL); every .pt file goes through the same weights-only loader as uploads, so
checking a file never runs its code.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import CheckpointError, load_weights_only
from .errors import free_space
from .store import Store, default_home
from .storefile import SQLITE_HEADER, WRITE_ROOM_BYTES, integrity, runs_and_artifacts, salvage

TABLES = ("runs", "artifacts", "metrics")   # the order rows are copied in when salvaging


@dataclass
class Report:
    home: Path
    store_ok: bool = True
    store_problems: list[str] = field(default_factory=list)
    runs: int = 0
    files: int = 0
    file_problems: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)   # run folders the store has no record of
    disk: str = ""
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.store_ok and not self.file_problems

    def lines(self) -> list[str]:
        store = self.home / "runs.sqlite"
        out = [f"store {store}: " + ("ok" if self.store_ok else "DAMAGED")]
        out += [f"  {p}" for p in self.store_problems]
        if self.disk:
            out.append(self.disk)
        out.append(f"runs: {self.runs} checked, {self.files} files loaded weights-only, "
                   f"{len(self.file_problems)} problem(s)")
        out += [f"  {p}" for p in self.file_problems]
        if self.unrecorded:
            out.append(f"run folders with no record in the store (their files are kept): {len(self.unrecorded)}")
        if self.temp_files:
            out.append(f"temporary files left by failed saves: {len(self.temp_files)}"
                       + ("" if self.repaired else " (--repair removes them)"))
        out += [f"repaired: {r}" for r in self.repaired]
        if not self.store_ok and not self.repaired:
            out.append("Fix: `kd-explorer doctor --repair` moves the store aside (kept as runs.sqlite.broken-<time>, "
                       "what is still readable copied over) and starts a fresh one. Stop the app and workers first.")
        if self.file_problems:
            out.append("A damaged checkpoint.pt: move it aside and `kd-explorer resume RUN` starts that run over; "
                       "a damaged model.pt or probe: rerun the run, or `delete` it from the app.")
        return out

    def to_dict(self) -> dict:
        return {"home": str(self.home), "ok": self.ok, "store_ok": self.store_ok, "store_problems": self.store_problems,
                "runs": self.runs, "files": self.files, "file_problems": self.file_problems,
                "temp_files": self.temp_files, "unrecorded": self.unrecorded, "disk": self.disk,
                "repaired": self.repaired}


def check_store(path: Path) -> list[str]:
    """What is wrong with the store file ([] when healthy or absent)."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) == 0:
        return []   # an empty file is a new store to sqlite
    if header[:16] != SQLITE_HEADER:
        return [f"not an SQLite database: it starts with {header[:16]!r} instead of {SQLITE_HEADER!r}"]
    if len(header) < 100:
        return [f"truncated: {len(header)} bytes, shorter than an SQLite header"]
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    problems = []
    if page_size and pages and size < page_size * pages and not Path(f"{path}-wal").exists():
        problems.append(f"truncated: {size} bytes, but its header counts {pages} pages of {page_size} bytes "
                        f"({pages * page_size} bytes)")
    return problems + integrity(path, TABLES)


def _runs_and_files(home: Path, store_ok: bool) -> tuple[list[str], dict[str, list[Path]], list[str]]:
    """Run ids and each one's files (the store's artifacts, when readable, and every .pt in its folder),
    and the run folders the store has no record of."""
    runs_dir = home / "runs"
    files: dict[str, list[Path]] = {}
    run_ids = None
    if store_ok and (home / "runs.sqlite").exists():
        run_ids, artifacts = runs_and_artifacts(home / "runs.sqlite")
        for run_id in run_ids:
            files.setdefault(run_id, [])
        for run_id, path in artifacts:
            files.setdefault(run_id, []).append(Path(path))
    if runs_dir.is_dir():
        for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            have = files.setdefault(folder.name, [])
            have += [p for p in sorted(folder.glob("*.pt")) if p not in have]
    unrecorded = [] if run_ids is None else sorted(set(files) - set(run_ids))
    return sorted(files), files, unrecorded


class StoreBusy(RuntimeError):
    pass


def command_line(repair_store: bool = False, as_json: bool = False) -> int:
    """`kd-explorer doctor [--repair] [--json]`: 0 when all is well (after repairing), else 1."""
    try:
        report = repair() if repair_store else check()
    except StoreBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict()) if as_json else "\n".join(report.lines()))
    return 0 if report.ok else 1


def check(home: str | Path | None = None) -> Report:
    home = Path(home) if home else default_home()
    report = Report(home)
    report.store_problems = check_store(home / "runs.sqlite")
    report.store_ok = not report.store_problems
    space = free_space(home)
    if space is not None:
        low = " -- nearly full: runs cannot record their results" if space[0] < 4 * WRITE_ROOM_BYTES else ""
        report.disk = f"disk at {home}: {space[0] / 1e6:.1f} MB free of {space[1] / 1e6:.1f} MB{low}"
    run_ids, files, report.unrecorded = _runs_and_files(home, report.store_ok)
    report.runs = len(run_ids)
    for run_id in run_ids:
        for path in files[run_id]:
            if not path.exists():
                report.file_problems.append(f"run {run_id}: {path} is missing")
            elif path.suffix == ".pt":
                try:
                    problem = _content_problem(path, load_weights_only(path, fix=""))
                    report.files += 1
                except CheckpointError as e:
                    problem = str(e).strip()
                if problem:
                    report.file_problems.append(f"run {run_id}: {path}: {problem}")
    if (home / "runs").is_dir():
        report.temp_files = [str(p) for p in sorted((home / "runs").glob("*/*.tmp"))]
    return report


def _content_problem(path: Path, obj) -> str | None:
    """What a run's file lacks for its role, by its name (checkpoint.pt, model.pt, probe_*.pt)."""
    from .engine.checkpoint import CHECKPOINT_KEYS
    if path.name == "checkpoint.pt":
        need = CHECKPOINT_KEYS
    elif path.name.startswith("probe_"):
        need = ("epoch", "x", "y", "student", "teacher")
    elif path.name == "model.pt":
        ok = isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values())
        return None if ok else "not the run's models (a mapping of model names to state_dicts)"
    else:
        return None
    missing = [k for k in need if not isinstance(obj, dict) or k not in obj]
    return f"not a run {path.stem.split('_')[0]} file: it lacks {', '.join(missing)}" if missing else None


def repair(home: str | Path | None = None) -> Report:
    """Move a broken store aside and start a fresh one holding what was still readable; remove temp files."""
    home = Path(home) if home else default_home()
    report = check(home)
    done = []
    for tmp in report.temp_files:
        Path(tmp).unlink(missing_ok=True)
    if report.temp_files:
        done.append(f"removed {len(report.temp_files)} temporary file(s)")
    if not report.store_ok:
        busy = _busy_worker(home)
        if busy:
            raise StoreBusy(f"a worker (pid {busy}) is using the store {home / 'runs.sqlite'}: stop it (and the "
                               "app) before `kd-explorer doctor --repair`")
        aside = move_aside(home / "runs.sqlite")
        fresh = Store(home)
        try:
            kept = ", ".join(f"{n} {t} rows" for t, n in salvage(aside, fresh.path, TABLES).items())
        except Exception as e:   # the copy aside is whole whatever happens here
            kept = f"none ({type(e).__name__}: {e})"
        done.append(f"moved the damaged store to {aside} (kept as it was); started a fresh store with what was "
                    f"still readable: {kept}")
    fresh = check(home)
    fresh.repaired = done
    return fresh


def move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}-{n}"), n + 1
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):   # the WAL belongs to its database: it moves with it
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _busy_worker(home: Path) -> int | None:
    from .jobs import _lock_holder
    for lock in (home / "workers").glob("*.lock"):
        pid = _lock_holder(home, lock.stem)
        if pid:
            return pid
    return None
