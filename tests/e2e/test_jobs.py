"""The job manager's API: submit -> a worker process -> completed, FIFO order, cancel, one worker per
device; and the bundled default teacher that lets a first digits run skip teacher training."""
import json
import os
import threading
import time
from pathlib import Path

import pytest

from explorer import app_launcher, cli, jobs, teachers
from explorer.config import ConfigError, RunConfig
from explorer.engine import Trainer
from explorer.recipes import default_teacher_recipe, recipe_hash, resolve
from explorer.store import Store
from support.runs import stored_student_test_acc
from support.jobs import TINY, one_thread_workers, stop_workers, wait_for as _wait_for  # noqa: F401  (autouse fixture)


def test_submit_runs_in_a_worker_process_to_completion():
    store = Store()
    run_id = jobs.submit(RunConfig(**TINY, epochs=2), store)
    run = jobs.wait(run_id, timeout=120, store=store)
    assert run["status"] == "completed", run["message"]
    assert run["worker_pid"] not in (None, os.getpid())          # trained in the worker, not in this process
    assert run["config"]["lr"] == 0.05 and run["config"]["teacher"] == "cnn_large"   # defaults were filled
    assert run["summary"]["test_acc"] == pytest.approx(stored_student_test_acc(store, run_id))   # the saved student
    assert Path(store.artifacts(run_id)["model"]).is_file()
    assert [m["epoch"] for m in store.metrics(run_id, "epoch") if m["name"] == "val/acc"] == [1, 2]
    assert (store.home / "workers" / "cpu.log").read_text().count(run_id) >= 2   # claimed and finished


def test_queue_is_fifo_one_run_at_a_time_by_one_worker():
    store = Store()
    ids = [jobs.submit(dict(TINY, epochs=2, seed=i), store) for i in range(3)]   # dicts are accepted too
    q = jobs.queue(store)
    assert [r["id"] for r in q] == ids and [r["position"] for r in q] in ([0, 1, 2], [1, 2, 3])
    runs = [jobs.wait(i, timeout=180, store=store) for i in ids]
    assert all(r["status"] == "completed" for r in runs), [r["message"] for r in runs]
    assert len({r["worker_pid"] for r in runs}) == 1
    for before, after in zip(runs, runs[1:]):                     # strictly one after the other, in order
        assert before["finished"] <= after["started"]
    assert jobs.queue(store) == []


def test_cancel_a_queued_run_at_once_and_a_running_one_soon():
    store = Store()
    first = jobs.submit(RunConfig(**TINY, epochs=200), store)
    second = jobs.submit(RunConfig(**TINY, epochs=2), store)
    assert jobs.cancel(second, store) == "cancelled"
    run = store.get_run(second)
    assert run["status"] == "cancelled" and run["started"] is None and run["message"]
    _wait_for(lambda: store.metrics(first, "epoch"), 60)         # running, one epoch done
    jobs.cancel(first, store)
    assert jobs.wait(first, timeout=30, store=store)["status"] == "cancelled"
    assert store.get_run(second)["status"] == "cancelled"         # the worker never picked it up
    stop_workers(store)                                          # queue one more with no worker to take it
    _wait_for(lambda: jobs._lock_holder(store.home, "cpu") is None, 10)
    third = store.create_run(resolve(RunConfig(**TINY, epochs=1)).to_dict())
    store.update_run(third, device="cpu", queued_at=time.time())
    assert cli.main(["cancel", third]) == 0 and store.get_run(third)["status"] == "cancelled"   # the CLI too
    assert store.metrics(first, "epoch")                          # the partial record is kept


def test_ensure_worker_is_idempotent_and_race_free():
    store = Store()
    pids = []
    barrier = threading.Barrier(4)

    def spawn():
        barrier.wait()
        pids.append(jobs.ensure_worker("cpu", store))

    threads = [threading.Thread(target=spawn) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    _wait_for(lambda: jobs._lock_holder(store.home, "cpu") is not None, 30)
    holder = jobs._lock_holder(store.home, "cpu")
    assert set(pids) == {holder}, (pids, holder)                  # four callers, one worker
    assert jobs.ensure_worker("cpu", store) == holder
    _wait_for(lambda: jobs._lock_holder(store.home, "cpu") is None, 60)   # idle worker exits ...
    _wait_for(lambda: not _alive(holder), 60)
    assert jobs.ensure_worker("cpu", store) not in (None, holder)         # ... and a fresh one starts


def test_invalid_config_is_refused_before_queueing():
    store = Store()
    with pytest.raises(ConfigError, match="lr"):
        jobs.submit(dict(TINY, lr=-1.0), store)
    assert store.list_runs() == []


def test_resume_refuses_runs_that_are_not_resumable():
    store = Store()
    run_id = store.create_run(resolve(RunConfig(**TINY, epochs=1)).to_dict(), status="completed")
    with pytest.raises(ValueError, match="is completed"):
        jobs.resume(run_id, store)


def test_bundled_digits_teacher_matches_the_current_recipe():
    tcfg = default_teacher_recipe("digits")
    path = teachers.bundled_path(recipe_hash(tcfg))
    assert path is not None, "data/teachers/ has no file for the digits teacher recipe: " \
                             "re-run scripts/train_default_teachers.py"
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["dataset"] == "digits" and info["arch"] == tcfg.student == "cnn_large"
    assert info["test_acc"] > 0.9 and path.stat().st_size < 5 * 2**20


@pytest.mark.parametrize("info_path", sorted((Path(__file__).resolve().parents[2] / "data" / "teachers").glob("*.json")),
                         ids=lambda p: p.stem)
def test_every_bundled_teacher_matches_its_datasets_current_recipe(info_path):
    info = json.loads(info_path.read_text())
    tcfg = default_teacher_recipe(info["dataset"])
    assert recipe_hash(tcfg) == info_path.stem, f"stale {info_path.name}: re-run scripts/train_default_teachers.py"
    assert info["arch"] == tcfg.student and info_path.with_suffix(".pt").stat().st_size < 5 * 2**20


def test_digits_kd_run_with_an_empty_store_uses_the_bundled_teacher():
    store = Store()
    events = []
    result = Trainer(RunConfig(**TINY, epochs=1), store, on_event=events.append).run()
    assert result["teacher_source"] == "bundled"
    assert [r["role"] for r in store.list_runs()] == ["distill"]  # no teacher was trained
    assert not any(e.kind.startswith("teacher_") for e in events)
    ref = teachers.of_run(store.get_run(result["run_id"]))
    info = json.loads(Path(ref.path).with_suffix(".json").read_text())
    assert result["teacher_acc"] == pytest.approx(info["test_acc"], abs=1e-9)
    assert (ref.source, ref.arch) == (result["teacher_source"], result["teacher_arch"])   # the run records it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").is_file() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_app_launcher_recovers_jobs_then_starts_streamlit_on_home(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "recover", lambda store=None: calls.append("recover") or [])
    monkeypatch.setattr(app_launcher.subprocess, "call", lambda cmd, cwd, env: calls.append((cmd, cwd)) or 0)
    monkeypatch.setattr(app_launcher, "ENTRY", tmp_path / "missing.py")
    assert app_launcher.launch() == 2 and calls == []            # no entry script: a clear error, nothing run
    entry = tmp_path / "Home.py"
    entry.write_text("")
    monkeypatch.setattr(app_launcher, "ENTRY", entry)
    assert app_launcher.launch("127.0.0.1", 8600) == 0
    assert calls[0] == "recover"
    cmd, cwd = calls[1]
    assert cmd[1:5] == ["-m", "streamlit", "run", str(entry)] and cwd == app_launcher.ROOT
    assert cmd[5:] == ["--server.address", "127.0.0.1", "--server.port", "8600"]   # only the flags given
    config = (app_launcher.ROOT / ".streamlit" / "config.toml").read_text()
    for line in ('fileWatcherType = "none"', "gatherUsageStats = false", "runOnSave = false", "headless = true"):
        assert line in config


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_kd_run_uses_the_bundled_teacher():
    store = Store()
    result = Trainer(RunConfig(dataset="fashion-mnist", methods="kd", n_train=200, epochs=1, probe_size=16), store).run()
    assert result["teacher_source"] == "bundled" and result["teacher_acc"] > 0.9
    assert [r["role"] for r in store.list_runs()] == ["distill"]   # no teacher trained
