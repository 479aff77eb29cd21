"""The Ray executor on a real local cluster (2 CPUs, loopback): a grid recorded once per run with all
its metrics, a SIGKILLed Ray worker leaving its run interrupted and the grid's --resume finishing it from
its checkpoint, and a cancel reaching a remote run through the store."""
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from explorer import cli, jobs
from explorer.executors import run_many
from explorer.store import Store
from support.jobs import stop_workers

TINY = dict(dataset="digits", student="cnn_tiny", n_train=200, probe_size=0, probe_epochs=[], device="cpu")


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (its start is most of the cost), stopped at the end."""
    global ray
    ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install kd-explorer[ray]`")
    temp = tempfile.mkdtemp(prefix="kdray")   # short: Ray's socket paths must fit in 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def epoch_rows_complete(store: Store, run_id: str, epochs: int) -> None:
    """Every epoch 1..epochs logged, each metric once: nothing missing, nothing duplicated."""
    rows = store.metrics(run_id, "epoch")
    names = {m["name"] for m in rows}
    assert sorted({m["epoch"] for m in rows}) == list(range(1, epochs + 1))
    assert len(rows) == epochs * len(names) == len({(m["epoch"], m["name"]) for m in rows})
    steps = store.metrics(run_id, "step")
    assert len(steps) == len({(m["step"], m["name"]) for m in steps})


def test_bench_with_the_local_executor_records_each_run_once_and_resume_reuses_them(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    argv = ["bench", "methods", "--keys", "kd", "--seeds", "0", "--epochs", "1", "--n-train", "100",
            "--device", "cpu", "--executor", "local", "--out", str(out)]
    assert cli.main(argv) == 0
    store = Store()
    runs = store.list_runs()
    assert sorted(r["name"] for r in runs) == ["bench-methods-kd-s0", "bench-methods-none-s0"]
    assert all(r["status"] == "completed" and r["worker_pid"] == os.getpid() for r in runs)   # here, in turn
    table = out.read_text()
    assert cli.main(argv + ["--resume"]) == 0   # both completed: reused, nothing trained, no row added
    assert [r["id"] for r in store.list_runs()] == [r["id"] for r in runs]
    assert out.read_text() == table
    assert cli.main(argv) == 0                  # without --resume: a fresh grid
    assert len(store.list_runs()) == 4


def test_a_grid_of_two_methods_by_two_seeds_is_recorded_once_each(cluster, tmp_path):
    store = Store(tmp_path / "home")
    configs = [dict(TINY, epochs=2, seed=s, methods=[m], name=f"grid-{m}-s{s}") for m in ("kd", "dkd") for s in (0, 1)]
    ids = run_many(configs, executor="ray", store=store)
    assert len(set(ids)) == 4
    runs = store.list_runs()
    assert sorted(r["id"] for r in runs) == sorted(ids)        # one row per config, nothing more (no retries)
    for run_id, cfg in zip(ids, configs):
        run = store.get_run(run_id)
        assert run["status"] == "completed", run["message"]
        assert run["name"] == cfg["name"] and run["methods"] == cfg["methods"][0]
        assert run["worker_pid"] != os.getpid()                 # trained by a Ray worker, not here
        assert 0.0 <= run["summary"]["test_acc"] <= 1.0
        epoch_rows_complete(store, run_id, 2)
    # --resume: every run is completed already, so nothing runs again and no row is added
    assert run_many(configs, executor="ray", store=store, resume=True) == ids
    assert len(store.list_runs()) == 4


def test_a_killed_ray_worker_leaves_the_run_interrupted_and_the_grids_resume_finishes_it(cluster, tmp_path):
    store = Store(tmp_path / "home")
    epochs = 20   # long enough that the kill, after two epochs, lands mid-run even on a busy machine
    configs = [dict(TINY, epochs=epochs, name="killed")]
    done: list = []
    grid = threading.Thread(target=lambda: done.append(run_many(configs, executor="ray", store=store, retries=0)))
    grid.start()
    run_id = wait_for(lambda: next((r["id"] for r in store.list_runs()), None), 60)
    ckpt = Path(store.get_run(run_id)["run_dir"]) / "checkpoint.pt"
    wait_for(lambda: ckpt.exists() and len({m["epoch"] for m in store.metrics(run_id, "epoch")}) >= 2, 90)
    pid = store.get_run(run_id)["worker_pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)                                # the Ray worker running the task
    grid.join(60)
    assert done == [[run_id]]
    run = store.get_run(run_id)
    assert run["status"] == "interrupted", run
    kept = {m["epoch"] for m in store.metrics(run_id, "epoch") if m["time"] < killed_at}
    assert kept and max(kept) < epochs

    assert run_many(configs, executor="ray", store=store, resume=True, retries=0) == [run_id]   # the same row
    run = store.get_run(run_id)
    assert run["status"] == "completed", run["message"]
    assert run["worker_pid"] != pid
    assert [r["id"] for r in store.list_runs()] == [run_id]
    epoch_rows_complete(store, run_id, epochs)
    before = {m["epoch"] for m in store.metrics(run_id, "epoch") if m["time"] < killed_at}
    assert before and min(before) == 1                          # the epochs before the checkpoint were not redone


def test_the_apps_queue_hands_runs_to_the_cluster_under_KD_EXPLORER_EXECUTOR_ray(cluster, monkeypatch):
    monkeypatch.setenv("KD_EXPLORER_EXECUTOR", "ray")
    monkeypatch.setenv("KD_EXPLORER_RAY_ADDRESS", ray.get_runtime_context().gcs_address)   # this cluster
    monkeypatch.setenv("KD_EXPLORER_WORKER_IDLE_S", "1.5")
    store = Store()   # KD_EXPLORER_HOME: the dispatcher process the queue starts uses the same store
    try:
        run_id = jobs.submit(dict(TINY, epochs=2), store)
        assert store.get_run(run_id)["device"] == f"ray:{run_id}"          # its own queue: no local worker takes it
        run = jobs.wait(run_id, timeout=120, store=store)
        assert run["status"] == "completed", (run["message"], (store.home / "workers" / "ray.log").read_text())
        assert len(store.list_runs()) == 1
        epoch_rows_complete(store, run_id, 2)
        assert run["worker_pid"] != os.getpid()
        wait_for(lambda: f"run {run_id}: completed on" in (store.home / "workers" / "ray.log").read_text(), 30)
    finally:
        stop_workers(store)


def test_with_a_retry_the_grid_itself_resumes_a_killed_run_from_its_checkpoint(cluster, tmp_path):
    store = Store(tmp_path / "home")
    epochs = 20
    done: list = []
    grid = threading.Thread(target=lambda: done.append(
        run_many([dict(TINY, epochs=epochs, name="retried")], executor="ray", store=store, retries=1)))
    grid.start()
    run_id = wait_for(lambda: next((r["id"] for r in store.list_runs()), None), 60)
    ckpt = Path(store.get_run(run_id)["run_dir"]) / "checkpoint.pt"
    wait_for(lambda: ckpt.exists() and len({m["epoch"] for m in store.metrics(run_id, "epoch")}) >= 2, 90)
    pid, killed_at = store.get_run(run_id)["worker_pid"], time.time()
    os.kill(pid, signal.SIGKILL)
    grid.join(120)
    assert done == [[run_id]]
    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["worker_pid"] != pid, run["message"]
    assert [r["id"] for r in store.list_runs()] == [run_id]
    epoch_rows_complete(store, run_id, epochs)
    assert 1 in {m["epoch"] for m in store.metrics(run_id, "epoch") if m["time"] < killed_at}


def _cancel_remote(store: Store) -> tuple[str, float]:
    """Start a long run on the cluster, cancel it once it trains; returns (run id, seconds to `cancelled`).
    It records through the store actor, as a run on another host does (claim, metrics, cancel polls)."""
    done: list = []
    grid = threading.Thread(target=lambda: done.append(
        run_many([dict(TINY, epochs=200, name="cancelled")], executor="ray", store=store, via_actor=True)))
    grid.start()
    run_id = wait_for(lambda: next((r["id"] for r in store.list_runs()), None), 60)
    wait_for(lambda: store.metrics(run_id, "step") or store.metrics(run_id, "epoch"), 90)
    t0 = time.monotonic()
    jobs.cancel(run_id, store)
    wait_for(lambda: store.get_run(run_id)["status"] == "cancelled", 60)
    latency = time.monotonic() - t0
    grid.join(60)
    assert done == [[run_id]]
    return run_id, latency


def test_a_cancelled_remote_run_ends_cancelled_keeping_its_record(cluster, tmp_path):
    store = Store(tmp_path / "home")
    run_id, _ = _cancel_remote(store)
    run = store.get_run(run_id)
    assert run["status"] == "cancelled" and run["worker_pid"] != os.getpid()
    epochs = [m["epoch"] for m in store.metrics(run_id, "epoch") if m["name"] == "val/acc"]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 200   # streamed through the actor, in order


@pytest.mark.benchmark
def test_cancel_reaches_a_remote_run_within_two_seconds(cluster, tmp_path):
    _, latency = _cancel_remote(Store(tmp_path / "home"))
    print(f"cancel -> cancelled on a Ray worker: {latency:.2f} s")
    assert latency < 2.0


def test_tune_runs_each_rung_on_the_cluster_and_never_reads_the_test_split(cluster, tmp_path):
    """kd-explorer tune --executor ray: a rung's trials are Ray tasks; each worker derives the dataset's validation
    view itself (digits~val), so the trials score on validation rows there too."""
    from explorer import tune
    store = Store(tmp_path / "home")
    entry = tune.tune_key("kd", "digits", [0], 2, store, {"epochs": 1, "n_train": 120}, log=lambda m: None,
                          executor="ray")
    runs = store.list_runs()
    assert len(runs) == 2 and all(r["status"] == "completed" for r in runs)
    assert all(store.get_run(r["id"])["worker_pid"] != os.getpid() for r in runs)   # trained on Ray workers
    assert {store.get_run(r["id"])["config"]["dataset"] for r in runs} == {"digits~val"}
    assert all(0.0 <= t["val_acc"][0] <= 1.0 for t in entry["trials"])
