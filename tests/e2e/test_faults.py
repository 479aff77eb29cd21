"""Fault tolerance: each test injects one fault (a killed worker, a cancel, divergence, out of
memory, a full disk, a missing dataset, a restart, two sessions at once) and checks that the run
ends in the right state with a readable message and that the run store stays consistent."""
import errno
import os
import signal
import sqlite3
import threading
import time

import pytest
import torch

from explorer import cli, jobs
from explorer.config import RunConfig
from explorer.engine import Trainer
from explorer.errors import RunFailed
from explorer.store import Store

from support.jobs import TINY, one_thread_workers, stop_workers, wait_for as _wait_for  # noqa: F401  (autouse fixture)


def assert_consistent(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for run in store.list_runs():                                # every run and its record is readable
        store.get_run(run["id"])
        store.metrics(run["id"])
        store.artifacts(run["id"])
    store.runs_df()


def kill_worker_after_epochs(store: Store, run_id: str, epochs: int) -> int:
    _wait_for(lambda: len({m["epoch"] for m in store.metrics(run_id, "epoch")}) >= epochs, 120)
    pid = store.get_run(run_id)["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: jobs._lock_holder(store.home, "cpu") is None, 10)   # the kernel freed its lock
    return pid


def epoch_values(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m["epoch"], m["value"]) for m in store.metrics(run_id, "epoch") if m["name"] == name]


def test_killed_worker_run_is_interrupted_then_resumes_to_identical_weights():
    store = Store()
    cfg = RunConfig(**TINY, epochs=30, seed=3)
    reference = jobs.submit(cfg, store)                          # the same run, never interrupted
    assert jobs.wait(reference, 300, store)["status"] == "completed"

    run_id = jobs.submit(RunConfig(**TINY, epochs=30, seed=3), store)
    kill_worker_after_epochs(store, run_id, 3)
    run = store.get_run(run_id)                                  # any read sees its owner gone (no app needed)
    assert run["status"] == "interrupted"
    assert jobs.recover(store) == []                             # nothing left for the app's recovery
    assert run["status"] == "interrupted" and f"kd-explorer resume {run_id}" in run["message"]
    kept = epoch_values(store, run_id, "val/acc")
    assert len(kept) >= 3 and [e for e, _ in kept] == list(range(1, len(kept) + 1))
    assert kept == epoch_values(store, reference, "val/acc")[:len(kept)]   # the epochs done so far are kept

    jobs.resume(run_id, store)
    run = jobs.wait(run_id, 300, store)
    assert run["status"] == "completed", run["message"]
    assert run["summary"]["test_acc"] == store.get_run(reference)["summary"]["test_acc"]
    assert epoch_values(store, run_id, "val/acc") == epoch_values(store, reference, "val/acc")   # each epoch once
    assert epoch_values(store, run_id, "train/loss") == epoch_values(store, reference, "train/loss")
    a = torch.load(store.artifacts(run_id)["model"], weights_only=True)["student"]
    b = torch.load(store.artifacts(reference)["model"], weights_only=True)["student"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # bit-identical weights
    assert len(store.list_runs()) == 2
    assert_consistent(store)


def test_cancel_from_the_cli_stops_a_running_run_within_2_seconds(capsys):
    store = Store()
    run_id = jobs.submit(RunConfig(**TINY, epochs=500), store)
    _wait_for(lambda: len(store.metrics(run_id, "epoch")) > 0, 120)
    t0 = time.perf_counter()
    assert cli.main(["cancel", run_id]) == 0
    _wait_for(lambda: store.get_run(run_id)["status"] == "cancelled", 10)
    seconds = time.perf_counter() - t0
    print(f"\ncancel -> cancelled in {seconds:.3f} s")
    assert seconds < 2.0
    run = store.get_run(run_id)
    assert run["message"] == "cancelled by the user" and store.metrics(run_id, "epoch")   # partial record kept
    assert jobs.submit(RunConfig(**TINY, epochs=1), store)       # the worker takes the next job
    assert_consistent(store)


def test_diverging_run_fails_with_the_cause_and_the_worker_goes_on():
    store = Store()
    bad = jobs.submit(RunConfig(**TINY, epochs=3, lr=100.0), store)
    good = jobs.submit(RunConfig(**TINY, epochs=1), store)
    run = jobs.wait(bad, 120, store)
    assert run["status"] == "failed"
    assert "loss diverged" in run["message"] and "lr=100.0" in run["message"] and "Fix: lower --lr" in run["message"]
    other = jobs.wait(good, 120, store)
    assert other["status"] == "completed" and other["worker_pid"] == run["worker_pid"]
    assert_consistent(store)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])   # new and old torch raise these
def test_out_of_memory_is_explained(monkeypatch, error):
    from explorer.schemes.offline import Offline

    def oom(self, batch):
        raise error("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)")
    monkeypatch.setattr(Offline, "train_step", oom)
    store = Store()
    with pytest.raises(RunFailed, match="ran out of memory"):
        Trainer(RunConfig(**TINY, epochs=1), store).run()
    (run,) = store.list_runs()
    assert run["status"] == "failed"
    assert "Tried to allocate 2.00 GiB" in run["message"] and "lower --batch-size" in run["message"]
    assert_consistent(store)


def test_full_disk_when_saving_a_checkpoint(monkeypatch):
    real_save = torch.save

    def save(obj, f, *a, **k):
        if str(getattr(f, "name", f)).endswith(".tmp"):          # the checkpoint's temporary file
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    store = Store()
    with pytest.raises(RunFailed, match="could not save the checkpoint"):
        Trainer(RunConfig(**TINY, epochs=2), store).run()
    (run,) = store.list_runs()
    assert run["status"] == "failed"
    assert "No space left on device" in run["message"] and "Free disk space" in run["message"]
    assert not list(store.runs_dir.glob("*/checkpoint.tmp"))     # no torn file left behind
    assert len(store.metrics(run["id"], "epoch")) > 0            # epoch 1 was recorded before the save failed
    assert_consistent(store)


def test_missing_dataset_folder_fails_with_a_clear_message(capsys):
    store = Store()
    code = cli.main(["run", "--dataset", "cifar10", "--data-root", "/nonexistent", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "/nonexistent" in err and "does not exist" in err and "Traceback" not in err
    assert store.list_runs() == []          # refused by recipes.resolve before a run starts (the app does the same)
    assert_consistent(store)


def test_restart_while_runs_are_queued_and_running_loses_and_duplicates_nothing():
    store = Store()
    first = jobs.submit(RunConfig(**TINY, epochs=30), store)
    second = jobs.submit(RunConfig(**TINY, epochs=2), store)
    killed = kill_worker_after_epochs(store, first, 1)           # the app and its worker go down
    assert store.get_run(second)["status"] == "queued"
    assert store.get_run(first)["status"] == "interrupted"       # read as it is, before the app is back
    assert jobs.recover(store) == []                             # the app comes back: starts a worker for `second`
    done = jobs.wait(second, 120, store)
    assert done["status"] == "completed" and done["worker_pid"] != killed   # a fresh worker ran it
    assert jobs.recover(store) == []
    jobs.resume(first, store)
    assert jobs.wait(first, 300, store)["status"] == "completed"
    assert sorted(r["id"] for r in store.list_runs()) == sorted([first, second])   # exactly two rows
    assert_consistent(store)


def test_two_sessions_submitting_at_once_share_one_worker_in_order():
    store = Store()
    ids = {}
    barrier = threading.Barrier(2)

    def session(name):
        barrier.wait()
        ids[name] = jobs.submit(RunConfig(**TINY, epochs=2, name=name), Store())   # each its own store handle

    threads = [threading.Thread(target=session, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    runs = [jobs.wait(i, 120, store) for i in ids.values()]
    assert all(r["status"] == "completed" for r in runs)
    assert len({r["worker_pid"] for r in runs}) == 1
    first, second = sorted(runs, key=lambda r: r["queued_at"])
    assert first["finished"] <= second["started"]
    assert_consistent(store)
