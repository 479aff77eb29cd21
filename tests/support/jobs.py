"""Helpers for tests that run the job queue's worker processes (shared by the jobs and faults tests)."""
import os
import signal
import time

import pytest

from explorer import jobs
from explorer.store import Store

TINY = dict(dataset="digits", student="cnn_tiny", n_train=200, probe_size=0, probe_epochs=[], device="cpu")


@pytest.fixture(autouse=True)
def one_thread_workers(monkeypatch):
    """Workers inherit the environment: one thread each (the machine is shared), and a short idle exit.
    Any worker still alive at the end is stopped, by the pid it wrote in its lock file."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("KD_EXPLORER_WORKER_IDLE_S", "1.5")
    yield
    stop_workers(Store())


def stop_workers(store: Store) -> None:
    for lock in (store.home / "workers").glob("*.lock"):
        pid = jobs._lock_holder(store.home, lock.stem)
        if pid:
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
