"""A run's owner (issue 15, item 4): the process recording a run is stored with it (pid, start time,
host), and a run whose owner is gone reads as `interrupted` everywhere -- CLI, app pages, jobs, resume --
without the app's start-up recovery. Tested with a real `kd-explorer run` killed by SIGKILL."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer import jobs, owners
from explorer.store import Store

from support.jobs import one_thread_workers, wait_for  # noqa: F401  (autouse fixture: any worker is stopped)

REPO = Path(__file__).resolve().parents[2]
RUN = ["--dataset", "digits", "--n-train", "120", "--student", "cnn_tiny", "--epochs", "150", "--probe-size", "0",
       "--device", "cpu", "--json"]


def _cli(*argv, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "explorer", *argv], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _finished(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _dead_process() -> tuple[int, float]:
    """The pid and start time of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    wait_for(lambda: owners.start_time(p.pid) is not None, 10)
    start = owners.start_time(p.pid)
    p.kill()
    p.wait()
    return p.pid, start


def test_a_killed_cli_run_reads_as_interrupted_everywhere_and_resumes_to_completion():
    store = Store()
    p = _cli("run", *RUN)
    try:
        wait_for(lambda: any(len({m["epoch"] for m in store.metrics(r["id"], "epoch")}) >= 3
                             for r in store.list_runs(status="running")), 180)
        (run,) = store.list_runs(status="running")
        assert run["worker_pid"] == p.pid and run["owner_host"] == socket.gethostname()
        assert run["owner_start"] == pytest.approx(owners.start_time(p.pid), abs=0.05)
        p.send_signal(signal.SIGKILL)   # no handler runs: the row is left `running`
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    run_id = run["id"]
    with sqlite3.connect(store.path) as db:   # as the killed process left it
        assert db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "running"

    # a fresh CLI process, no app ever started: `kd-explorer runs --json` shows it interrupted, and records that
    code, out, err = _finished(_cli("runs", "--json"), 120)
    assert code == 0, err
    (listed,) = [r for r in json.loads(out) if r["id"] == run_id]
    assert listed["status"] == "interrupted"
    assert f"pid {p.pid}" in listed["message"] and f"kd-explorer resume {run_id}" in listed["message"]
    run = store.get_run(run_id)
    assert run["status"] == "interrupted" and run["finished"] is not None
    done = len({m["epoch"] for m in store.metrics(run_id, "epoch")})
    assert done >= 3 and f"after epoch {done}" in run["message"]

    # `kd-explorer resume` no longer answers "is running": it completes the run from its checkpoint
    code, out, err = _finished(_cli("resume", run_id, "--json"), 300)
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "completed"
    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["message"] == "" and run["summary"]["epochs"] == 150
    epochs = [m["epoch"] for m in store.metrics(run_id, "epoch") if m["name"] == "val/acc"]
    assert epochs == list(range(1, 151))   # the epochs before the kill kept, the rest done once each
    assert [r["id"] for r in store.list_runs()] == [run_id]


def _running_row(store: Store, pid, start, host) -> str:
    run_id = store.create_run({"dataset": "digits", "methods": []})
    store.set_status(run_id, "running", message="", worker_pid=pid, owner_start=start, owner_host=host)
    return run_id


def test_every_reader_sees_a_dead_owner_and_leaves_live_and_remote_owners_alone():
    store = Store()
    pid, start = _dead_process()
    dead = _running_row(store, pid, start, socket.gethostname())
    reused = _running_row(store, os.getpid(), start - 3600, socket.gethostname())   # our pid, but not our start
    me = owners.fields()
    live = _running_row(store, me["worker_pid"], me["owner_start"], me["owner_host"])
    remote = _running_row(store, pid, start, "another-host")      # cannot be judged from here
    legacy = _running_row(store, pid, None, None)                 # no owner recorded: jobs.recover judges it

    assert {r["id"] for r in store.list_runs(status="running")} == {live, remote, legacy}
    assert {r["id"] for r in store.list_runs(status="interrupted")} == {dead, reused}
    for run_id in (dead, reused):
        run = store.get_run(run_id)
        assert run["status"] == "interrupted" and f"kd-explorer resume {run_id}" in run["message"]
        assert run["message"].endswith("(or resume it from the app).") and "before its first epoch" in run["message"]
    assert store.get_run(live)["status"] == "running" and store.get_run(remote)["status"] == "running"
    assert set(store.runs_df().query("status == 'interrupted'")["id"]) == {dead, reused}   # the app's table
    assert [r["id"] for r in jobs.queue(store)] == [live, remote, legacy]                  # the app's queue
    assert jobs.recover(store) == [legacy]   # its pid is gone too: the app's recovery still catches it
    assert store.get_run(remote)["status"] == "running"   # judged by its own host only


def test_a_dead_owner_reads_as_interrupted_even_where_the_store_cannot_be_written(monkeypatch):
    store = Store()
    pid, start = _dead_process()
    run_id = _running_row(store, pid, start, socket.gethostname())

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(store, "mark_interrupted", full)
    assert store.get_run(run_id)["status"] == "interrupted"            # shown so ...
    assert [r["status"] for r in store.list_runs()] == ["interrupted"]
    monkeypatch.undo()
    with sqlite3.connect(store.path) as db:                            # ... though not recorded
        assert db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "running"
    assert store.get_run(run_id)["status"] == "interrupted"            # recorded once it can be
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "interrupted"


def test_a_zombie_owner_is_dead_and_a_pid_alone_is_not_enough():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 30)
    try:
        assert owners.start_time(p.pid) is None
        assert owners.alive(p.pid, time.time(), socket.gethostname()) is False   # exited, not yet reaped
    finally:
        p.wait()
    me = owners.fields()
    assert owners.alive(os.getpid(), me["owner_start"], me["owner_host"]) is True
    assert owners.alive(os.getpid(), me["owner_start"] - 10, me["owner_host"]) is False   # a reused pid
    assert owners.alive(os.getpid(), me["owner_start"], "elsewhere") is None
