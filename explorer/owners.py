"""Who owns a running run: the process that records it (a CLI run, a job worker, torchrun's rank 0),
named by pid, the process's start time and the host, so a reader can tell a live owner from a dead one
(or from a new process that happens to have the same pid) without the owner's help.

    Store.set_status(run_id, "running", **owners.fields())     # the recording process claims the run
    owners.alive(pid, start, host)                             # True, False, or None: another host
    owners.reap(store)                                         # Store.reap_dead_owners: dead owners' runs

Imports nothing from the package, so the store can use it.
"""
from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

START_TOLERANCE_S = 2.0   # start times are read in clock ticks: the same process always reads the same


def host() -> str:
    return socket.gethostname()


def start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None where /proc cannot say (not Linux,
    no such process). A zombie has no start time: it is dead."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def fields(pid: int | None = None) -> dict:
    """The store columns naming this process (or `pid`) as a run's owner."""
    pid = os.getpid() if pid is None else pid
    return {"worker_pid": pid, "owner_start": start_time(pid), "owner_host": host()}


def alive(pid: int | None, start: float | None, owner_host: str | None) -> bool | None:
    """Whether the owner recorded as (pid, start, host) still runs. None: it cannot be told from here
    (another host, or no owner recorded)."""
    if not pid or not owner_host:
        return None
    if owner_host != host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: it exists
        pass
    except OSError:
        return None
    now = start_time(pid)
    if now is None:
        # a zombie (dead, not yet reaped), or no /proc to ask: alive only if /proc is missing altogether
        return not Path("/proc/self/stat").exists()
    if start is None:
        return True
    return abs(now - start) <= START_TOLERANCE_S   # else: the pid was reused by a younger process


def reap(store) -> dict[str, str]:
    """Mark `interrupted` every running run of `store` whose owner is gone -- a killed CLI run, job worker
    or torchrun rank 0 -- with a message saying how to resume it. Runs owned on another host, or with no
    owner recorded (stores written before owners were), are left alone (jobs.recover judges those).
    Returns {run_id: message} of the dead ones; where the store cannot be written (a full disk, a
    read-only copy) they are returned all the same, and readers show them interrupted unrecorded."""
    dead = [r for r in store.owned_running_runs() if alive(r["worker_pid"], r["owner_start"], r["owner_host"]) is False]
    found = {}
    for r in dead:
        done = f"after epoch {r['last_epoch']}" if r["last_epoch"] else "before its first epoch ended"
        found[r["id"]] = (f"interrupted: its process (pid {r['worker_pid']}) stopped {done}. Resume it from its "
                          f"last checkpoint with `kd-explorer resume {r['id']}` (or resume it from the app).")
        try:
            store.mark_interrupted(r["id"], r["worker_pid"], found[r["id"]])   # unless it changed meanwhile
        except sqlite3.DatabaseError:   # cannot write here and now
            pass
    return found
