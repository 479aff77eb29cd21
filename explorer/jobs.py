"""The job manager: a FIFO queue of runs kept in the run store, run one at a time per device by a
worker *process* (never in the Streamlit script thread, so a browser tab can close, rerun or crash
without touching training).

    run_id = submit(RunConfig(dataset="digits", n_train=300))   # queued; a worker is started if none
    cancel(run_id); resume(run_id); queue(); recover()

Every browser session and process shares the state through SQLite. Exactly one worker serves a
device: it holds an OS lock on <home>/workers/<device>.lock for its whole life, and a spawner hands
that same lock to the child it starts, so two sessions submitting at once never start two workers.
The lock also tells a live worker from a dead one whose pid was reused (see `recover`).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from .config import RunConfig
from .device import resolve_device
from .engine import Trainer
from .errors import RunFailed, explain
from .recipes import recipe_hash, resolve
from .store import FINAL, Store, safe_name

IDLE_EXIT_S = float(os.environ.get("KD_EXPLORER_WORKER_IDLE_S", 3.0))   # a worker exits after this long idle
POLL_S = 0.1
RESUMABLE = ("interrupted", "failed", "cancelled")


# ---------------------------------------------------------------------- the API the app calls
def submit(config: RunConfig | dict, store: Store | None = None) -> str:
    """Queue a run (resolved, so the stored config reproduces it) and make sure a worker serves it."""
    from .executors import check_available, default_executor
    check_available(default_executor())   # an unknown KD_EXPLORER_EXECUTOR, or ray without Ray: before queueing
    store = store or Store()
    cfg = resolve(config)
    run_id = store.create_run(cfg.to_dict(), status="queued",
                              recipe_hash=recipe_hash(cfg) if cfg.role == "teacher" else None)
    device, server = queue_of(run_id, cfg.device)
    store.update_run(run_id, device=device, queued_at=time.time(), resume=0)
    ensure_worker(server, store)
    return run_id


def cancel(run_id: str, store: Store | None = None) -> str:
    """Queued: cancelled at once. Running: ask the trainer, which stops within ~0.25 s keeping its record.
    Returns the status the run has now ("cancelled"; "running" while it winds down; else already final)."""
    store = store or Store()
    run = store.get_run(run_id)
    if store.cancel_queued(run["id"], "cancelled before it started"):
        return "cancelled"
    run = store.get_run(run["id"])
    if run["status"] not in FINAL:   # running (or a CLI run about to start): its trainer stops itself
        store.request_cancel(run["id"])
    return run["status"]


def resume(run_id: str, store: Store | None = None) -> str:
    """Re-queue an interrupted, failed or cancelled run; the worker continues it from its last checkpoint."""
    store = store or Store()
    run = store.get_run(run_id)
    device, server = queue_of(run["id"], run["config"].get("device", "auto"))
    if not store.requeue(run["id"], device, RESUMABLE):
        raise ValueError(f"run {run['id']} is {run['status']}; only {', '.join(RESUMABLE)} runs can be resumed")
    ensure_worker(server, store)
    return run["id"]


def queue(store: Store | None = None) -> list[dict]:
    """What the app shows as the queue: running runs first, then queued ones in the order they will run.
    Each run dict gains `position` (0 = running)."""
    store = store or Store()
    running = sorted(store.list_runs(status="running"), key=lambda r: r["started"] or 0)
    queued = sorted((r for r in store.list_runs(status="queued") if r["queued_at"] is not None),
                    key=lambda r: (r["queued_at"], r["created"]))
    return [r | {"position": 0} for r in running] + [r | {"position": i + 1} for i, r in enumerate(queued)]


def wait(run_id: str, timeout: float = 120.0, store: Store | None = None) -> dict:
    """Block until the run reaches a final status; returns the run. For tests and scripts."""
    store = store or Store()
    deadline = time.monotonic() + timeout
    while True:
        run = store.get_run(run_id)
        if run["status"] in FINAL:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:.0f} s; "
                               f"the worker log is in {store.home / 'workers'}")
        time.sleep(POLL_S)


def recover(store: Store | None = None) -> list[str]:
    """On start-up: mark runs whose process died as `interrupted`, and start workers for queued runs.
    Idempotent and safe to call from many sessions; returns the ids it marked interrupted."""
    store = store or Store()
    marked = list(store.reap_dead_owners())   # owners recorded (explorer.owners): every reader does this too
    for run in store.list_runs(status="running"):
        if run["owner_host"] or _process_alive(run, store.home):   # an owner recorded: judged by its host only
            continue
        epochs = [m["epoch"] for m in store.metrics(run["id"], "epoch")]
        done = f"after epoch {max(epochs)}" if epochs else "before its first epoch ended"
        msg = (f"interrupted: its process (pid {run['worker_pid']}) stopped {done}. Resume it from its last "
               f"checkpoint with `kd-explorer resume {run['id']}` (or resume it from the app).")
        if store.mark_interrupted(run["id"], run["worker_pid"], msg):   # only if nobody changed it meanwhile
            marked.append(run["id"])
    # after the checks above released any lock they probed, so a submit racing with us is served too
    queued = {r["device"] for r in store.list_runs(status="queued") if r["queued_at"] is not None}
    for device in sorted({"ray" if d.startswith("ray:") else d for d in queued}):   # ray_executor's queues
        ensure_worker(device, store)
    return marked


def ensure_worker(device: str = "cpu", store: Store | None = None) -> int | None:
    """Start a worker for `device` unless one is alive. Returns the worker's pid (None if unreadable)."""
    store = store or Store()
    path = _lock_path(store.home, device)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:               # a live worker holds it (or a spawner about to write its pid)
            deadline = time.monotonic() + 2.0
            while (pid := _read_pid(path)) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            return pid
        os.ftruncate(fd, 0)                   # no stale pid while we spawn
        # We hold the lock; the child inherits this very lock (same open file), so there is no moment
        # in which the lock is free and a second spawner could start another worker.
        log = open(path.with_suffix(".log"), "ab")
        env = dict(os.environ, KD_EXPLORER_HOME=str(store.home),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH")])))
        proc = subprocess.Popen([sys.executable, "-m", "explorer.jobs", "worker", "--device", device,
                                 "--lock-fd", str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        _write_pid(fd, proc.pid)
        threading.Thread(target=proc.wait, daemon=True).start()   # reap it when it exits: no zombies
        return proc.pid
    finally:
        os.close(fd)   # the child's copy keeps the lock held


def queue_of(run_id: str, device: str) -> tuple[str, str]:
    """(the run's queue, the worker serving it): its device's, or under KD_EXPLORER_EXECUTOR=ray a queue of
    its own served by the one dispatcher that hands runs to the Ray cluster (explorer.ray_executor)."""
    from .executors import default_executor
    if default_executor() == "ray":
        from .ray_executor import RAY_QUEUE, queue_key
        return queue_key(run_id), RAY_QUEUE
    return device_key(device), device_key(device)


def device_key(name: str) -> str:
    """The queue a config's device belongs to: 'auto' resolved here, 'cuda' = 'cuda:0'. Never raises:
    an unavailable device fails in the worker with the trainer's message."""
    if name == "auto":
        name = resolve_device("auto").type
    return "cuda:0" if name == "cuda" else name


# ---------------------------------------------------------------------- the worker process
def worker(device: str, lock_fd: int | None = None, idle_exit_s: float = IDLE_EXIT_S) -> int:
    """Run queued jobs for `device` in FIFO order until the queue stays empty for `idle_exit_s`."""
    store = Store()
    if lock_fd is None:   # started by hand: take the lock ourselves, or leave it to the worker that has it
        lock_fd = os.open(_lock_path(store.home, device), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another worker serves {device} (pid {_read_pid(_lock_path(store.home, device))}); exiting")
            return 0
    _write_pid(lock_fd, os.getpid())
    if device == "ray":   # not a device: the dispatcher of the Ray executor's queues
        from .ray_executor import serve
        _log(f"worker {os.getpid()} hands queued runs to the Ray cluster (home {store.home})")
        return serve(store, lock_fd, idle_exit_s)
    if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # leave one core to the app and the browser: on 2 cores, a 2-thread worker that shares a core
        # with them runs 3-5x slower than a 1-thread one (OpenMP threads wait on a descheduled partner)
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    signal.signal(signal.SIGTERM, _raise_interrupt)   # `kill` ends the run as interrupted, not half-written
    _log(f"worker {os.getpid()} serves {device} (home {store.home})")
    idle_since = time.monotonic()
    while True:
        run = store.claim_next(device, os.getpid())
        if run is not None:
            _execute(store, run)
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since < idle_exit_s:
            time.sleep(POLL_S)
        else:
            # Release first, then look once more: a submit that saw our lock held before we released
            # has its run in the queue by now, so we either see it here or its spawner got the lock.
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            if not store.has_queued(device):
                break
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break   # a fresh worker took over
            _write_pid(lock_fd, os.getpid())
            idle_since = time.monotonic()
    _log(f"worker {os.getpid()} idle for {idle_exit_s:.0f} s; exiting")
    return 0


def _execute(store: Store, run: dict) -> None:
    _log(f"run {run['id']} starts{' (resuming)' if run['resume'] else ''}")
    try:
        result = Trainer(RunConfig.from_dict(run["config"]), store).run(run["id"], resume=bool(run["resume"]))
        _log(f"run {run['id']} {result['status']} {result.get('test_acc', '')}")
    except RunFailed as e:   # already recorded as failed by the trainer; the worker goes on
        _log(f"run {run['id']} failed: {e}")
    except Exception as e:   # e.g. a stored config that no longer validates: record it, go on
        store.set_status(run["id"], "failed", message=explain(e))
        _log(f"run {run['id']} failed before training: {e}")


# ---------------------------------------------------------------------- liveness
def _process_alive(run: dict, home: Path) -> bool:
    """Is the process recorded for this running run still working on it?

    A job run belongs to its device's worker: alive only while that pid holds the device lock (a
    SIGKILLed worker releases it, and a reused pid never holds it). A run started elsewhere (CLI,
    notebook) is alive while its pid is and started before the run did."""
    pid = run["worker_pid"]
    if not pid or not _pid_running(pid, run["started"]):
        return False
    if run["queued_at"] is None:
        return True
    return _lock_holder(home, device_key(run["config"].get("device", "auto"))) == pid


def _pid_running(pid: int, since: float | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # Linux: a zombie is dead, and a process younger than the run is a reused pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        if since is not None:
            btime = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
            started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return started <= since + 1.0
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return True


def _lock_holder(home: Path, device: str) -> int | None:
    """The pid of the worker holding the device lock, or None when no one holds it."""
    path = _lock_path(home, device)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _read_pid(path)
    finally:
        os.close(fd)


def _lock_path(home: Path, device: str) -> Path:
    folder = Path(home) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe_name(device)}.lock"


def _write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(pid).encode(), 0)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _log(msg: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explorer.jobs")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run queued jobs for one device (started by submit; rarely by hand)")
    w.add_argument("--device", default="cpu")
    w.add_argument("--lock-fd", type=int, default=None, help="an inherited, already locked lock file")
    args = p.parse_args(argv)
    try:
        return worker(args.device, args.lock_fd)
    except KeyboardInterrupt:   # the trainer has marked its run interrupted
        _log("worker interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
