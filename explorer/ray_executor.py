"""The `ray` executor: every run is one Ray task, asking for its CPUs (and a GPU when its device
resolves to cuda), that trains against the submitter's run store -- which, with the data, must be on a
filesystem every node sees (docs/ray.md).

Exactly once. The submitter puts each run in a queue of its own (device `ray:<run id>`, queued_at set),
and the task claims it with the store's atomic claim (Store.claim_next: queued -> running, owned by the
task's worker pid and host). A second task for the same run -- a retry, a duplicate -- finds nothing to
claim and trains nothing, so no run gets a second row nor a second set of metrics. Ray's own retries are
off (max_retries=0): a worker killed, or a node lost, surfaces here as a Ray error; the run is marked
`interrupted` (explorer.owners reaps it too where the owner's host is this one), and then, while
`retries` last, re-queued and submitted again -- it resumes from its last checkpoint on any node (the
trainer's resume drops the metrics recorded after that checkpoint). With retries=0 it stays
interrupted until `--resume` (executors.run_many(resume=True)) or `kd-explorer resume`.

Cancel: the store's cancel flag, which the trainer polls every CANCEL_POLL_S wherever it runs.
The app's queue under KD_EXPLORER_EXECUTOR=ray: jobs.py starts one dispatcher process (`serve`, the
job worker of the pseudo-device "ray"), which hands every queued `ray:` run to the cluster.
"""
from __future__ import annotations

import fcntl
import os
import signal
import time
from typing import Callable

from .config import RunConfig
from .errors import RunFailed, explain
from .store import FINAL, Store

RAY_QUEUE = "ray"        # the job queue's pseudo-device whose worker hands runs to the cluster
PREFIX = "ray:"
POLL_S = 0.5
ENV_ADDRESS = "KD_EXPLORER_RAY_ADDRESS"      # auto | ray://HOST:PORT | IP:PORT (unset: Ray's default)


def default_address() -> str | None:
    return os.environ.get(ENV_ADDRESS) or None


def queue_key(run_id: str) -> str:
    """The queue of one run: only a task for this run claims from it."""
    return PREFIX + run_id


def connect(address: str | None = None) -> None:
    """Join the cluster at `address` (auto, ray://HOST:PORT, IP:PORT), or Ray's default: the cluster
    started on this machine (`ray start --head`), else a new local one. Nothing if already connected."""
    import ray
    if ray.is_initialized():
        return
    kwargs = {} if address else {"include_dashboard": False}
    ray.init(address=address, log_to_driver=False, **kwargs)


def resources(device: str, num_cpus: float = 1) -> dict:
    """Ray resources of a run: its CPUs, and one GPU when its device is cuda (auto: when the cluster has one)."""
    import ray
    gpus = 0
    if device.startswith("cuda"):
        gpus = 1
    elif device == "auto":
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"num_cpus": num_cpus, "num_gpus": gpus}


# ---------------------------------------------------------------------- the store, written from one host
class StoreServer:
    """A Ray actor on the submitter's node that owns the run store there: the tasks record through it.
    SQLite in WAL mode must not be written from several hosts (its -shm index is shared memory, which
    a network filesystem does not share), so on a cluster only this host writes runs.sqlite; the
    tasks still read and write the run folders (checkpoints, models) on the shared filesystem."""

    def __init__(self, home: str):
        self.store = Store(home)

    def call(self, name: str, *args, **kwargs):
        return getattr(self.store, name)(*args, **kwargs)

    def claim(self, run_id: str, owner: dict) -> dict | None:
        """Claim the run for the task whose owner fields (pid, start, host) are `owner`: atomically
        queued -> running, owned by this actor's live process for an instant, then by the task."""
        run = self.store.claim_next(queue_key(run_id), os.getpid())
        if run is None:
            return None
        self.store.update_run(run_id, **owner)
        return self.store.get_run(run_id)


class StoreClient:
    """The Store API on a Ray worker of another host, answered by the StoreServer actor. Writes are sent
    without waiting (an actor runs one caller's calls in order, and the task's last read waits for them
    all): a task blocked in ray.get lends its CPU to the next task, so every wait oversubscribes the node."""
    WRITES = ("log_metrics", "add_artifact", "set_status", "update_run", "delete_metrics_after")

    def __init__(self, server, home: str):
        from pathlib import Path
        self._server, self.home = server, Path(home)
        self.runs_dir, self.path = self.home / "runs", self.home / "runs.sqlite"

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        import ray
        call = self._server.call

        def send(*args, **kwargs) -> None:
            call.remote(name, *args, **kwargs)

        def ask(*args, **kwargs):
            return ray.get(call.remote(name, *args, **kwargs))
        return send if name in self.WRITES else ask


# ---------------------------------------------------------------------- on the Ray worker
def train_claimed(home: str, run_id: str, threads: int = 1, server=None, store_host: str | None = None) -> dict:
    """The Ray task: claim the run (or do nothing if it is not queued for us any more), train it, say how
    it ended. On the store's host (`store_host`) it opens the store directly; elsewhere it records
    through `server`, the StoreServer actor (always, where store_host is None)."""
    import socket

    import ray
    import torch

    from . import owners
    from .engine import Trainer
    torch.set_num_threads(max(1, int(threads)))
    if server is None or store_host == socket.gethostname():
        store = Store(home)
        run = store.claim_next(queue_key(run_id), os.getpid())
    else:
        store = StoreClient(server, home)
        run = ray.get(server.claim.remote(run_id, owners.fields()))
    if run is not None:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)   # a graceful stop ends it interrupted
        try:
            Trainer(RunConfig.from_dict(run["config"]), store).run(run_id, resume=bool(run["resume"]))
        except RunFailed:   # recorded as failed by the trainer
            pass
        except KeyboardInterrupt:   # recorded as interrupted by the trainer
            pass
        except Exception as e:   # before training (a stored config that no longer validates): record it
            store.set_status(run_id, "failed", message=explain(e))
        finally:
            signal.signal(signal.SIGTERM, previous)
    claimed, run = run is not None, store.get_run(run_id)
    return {"run_id": run_id, "status": run["status"], "claimed": claimed, "pid": os.getpid(),
            "host": socket.gethostname(), "test_acc": run["summary"].get("test_acc")}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------- on the submitter
class Dispatcher:
    """Submits runs as Ray tasks and settles their ends: results, lost workers and nodes, retries."""

    def __init__(self, store: Store, num_cpus: float = 1, retries: int = 1, log: Callable[[str], None] = print,
                 via_actor: bool = False):
        """via_actor: every task records through the StoreServer, even on the store's own host (tests)."""
        import socket

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        self.ray, self.store, self.num_cpus, self.retries, self.log = ray, store, num_cpus, retries, log
        self.inflight: dict = {}   # ObjectRef -> (run_id, attempt)
        self.store_host = None if via_actor else socket.gethostname()
        self.task = ray.remote(train_claimed)
        here = ray.get_runtime_context().get_node_id()   # the store's host: the one that writes runs.sqlite
        pin = NodeAffinitySchedulingStrategy(here, soft=False)
        self.server = ray.remote(StoreServer).options(num_cpus=0, scheduling_strategy=pin,
                                                      max_concurrency=1).remote(str(store.home))

    def close(self) -> None:
        self.ray.kill(self.server)

    def run_ids(self) -> set[str]:
        return {run_id for run_id, _ in self.inflight.values()}

    def submit(self, run_id: str, attempt: int = 0) -> None:
        run = self.store.get_run(run_id)
        opts = resources(run["config"].get("device", "auto"), self.num_cpus)
        ref = self.task.options(**opts, max_retries=0, name=f"kd-run-{run_id}").remote(
            str(self.store.home), run_id, max(1, int(self.num_cpus)), self.server, self.store_host)
        self.inflight[ref] = (run_id, attempt)

    def poll(self, timeout: float | None = None) -> list[dict]:
        """Wait up to `timeout` (None: until one ends) and settle the tasks that ended."""
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        ended = []
        for ref in ready:
            run_id, attempt = self.inflight.pop(ref)
            try:
                out = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:   # escaped the task (e.g. the store unreachable)
                out = self._failed(run_id, e)
            except self.ray.exceptions.RayError as e:        # the worker or its node died: a system error
                out = self._lost(run_id, attempt, e)
            if out is not None:
                self.log(f"  run {run_id}: {out['status']}" + (f" on {out['host']} (pid {out['pid']})"
                                                              if out.get("host") else ""))
                ended.append(out)
        return ended

    def drain(self) -> None:
        """Wait for every task (Ctrl-C: ask each running run to stop, then re-raise)."""
        try:
            while self.inflight:
                self.poll(1.0)   # a bounded wait: Ctrl-C is only seen between two waits
        except KeyboardInterrupt:
            for ref in list(self.inflight):
                self.ray.cancel(ref)   # a KeyboardInterrupt in the task: the trainer records `interrupted`
            self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=10)
            raise

    def _failed(self, run_id: str, error: Exception) -> dict:
        run = self.store.get_run(run_id)
        if run["status"] not in FINAL:
            self.store.set_status(run_id, "failed", message=f"its Ray task failed: {error}")
        return {"run_id": run_id, "status": "failed"}

    def _lost(self, run_id: str, attempt: int, error: Exception) -> dict | None:
        """Mark the run interrupted (unless it ended meanwhile); re-submit it while retries last."""
        run = self.store.get_run(run_id)   # reaps a dead owner on this host: then it is interrupted already
        why = type(error).__name__
        if run["status"] in ("running", "queued"):
            msg = (f"interrupted: its Ray worker ({why}; pid {run['worker_pid']} on {run['owner_host']}) stopped. "
                   f"Resume it from its last checkpoint with `kd-explorer resume {run_id}` or the grid's --resume.")
            if run["status"] == "running":
                self.store.mark_interrupted(run_id, run["worker_pid"], msg)
            else:   # lost before any task claimed it: no other task will (its queue is its own)
                self.store.set_status(run_id, "interrupted", message=msg)
        run = self.store.get_run(run_id)
        if run["status"] == "interrupted" and attempt < self.retries:
            if self.store.requeue(run_id, queue_key(run_id), ("interrupted",)):
                self.log(f"  run {run_id}: its Ray worker stopped ({why}); resuming it (retry {attempt + 1})")
                self.submit(run_id, attempt + 1)
                return None
        return {"run_id": run_id, "status": run["status"], "message": run["message"]}


def run_on_ray(store: Store, pending, address: str | None = None, num_cpus: float = 1, retries: int = 1,
               log: Callable[[str], None] = print, via_actor: bool = False) -> None:
    """Run prepared runs (executors.prepare(queue=True)) on the cluster; return when all have ended."""
    connect(address)
    d = Dispatcher(store, num_cpus, retries, log, via_actor)
    try:
        for p in pending:
            d.submit(p.run_id)
        d.drain()
    finally:
        d.close()


def queued(store: Store) -> list[str]:
    """The runs waiting in a Ray queue, oldest first."""
    runs = [r for r in store.list_runs(status="queued")
            if r["queued_at"] is not None and r["device"] == queue_key(r["id"])]
    return [r["id"] for r in sorted(runs, key=lambda r: (r["queued_at"], r["created"]))]


def serve(store: Store, lock_fd: int, idle_exit_s: float, address: str | None = None) -> int:
    """The app queue's dispatcher (jobs.worker for RAY_QUEUE): hand every queued Ray run to the cluster,
    settle their ends, exit when idle. Holds the queue's lock like any job worker (see jobs.py)."""
    connect(address or default_address())
    d = Dispatcher(store, num_cpus=float(os.environ.get("KD_EXPLORER_RAY_CPUS", 1)),
                   retries=int(os.environ.get("KD_EXPLORER_RAY_RETRIES", 1)),
                   log=lambda msg: print(time.strftime("%Y-%m-%d %H:%M:%S"), msg.strip(), flush=True))
    idle_since = time.monotonic()
    try:
        while True:
            for run_id in queued(store):
                if run_id not in d.run_ids():
                    d.submit(run_id)
            if d.inflight:
                d.poll(POLL_S)
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since < idle_exit_s:
                time.sleep(POLL_S)
            else:   # as jobs.worker: release, then look once more, so a racing submit is never stranded
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
                if not queued(store):
                    return 0
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0   # a fresh dispatcher took over
                os.ftruncate(lock_fd, 0)
                os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
                idle_since = time.monotonic()
    except KeyboardInterrupt:
        for ref in list(d.inflight):
            d.ray.cancel(ref)
        raise
    finally:
        d.close()
