"""Many processes write one run store at once (the app, workers, the CLI): no row lost, no lock error."""
import multiprocessing as mp
import time
import traceback

import pytest

from explorer.store import Store

PROCS, RUNS, CALLS, VALUES = 4, 3, 100, 4   # per process: 3 runs x 100 log calls x 4 values


def _writer(home, barrier, errors, who):
    try:
        barrier.wait()   # all four open the store (creating its schema) and write at the same moment
        store = Store(home)
        for r in range(RUNS):
            run_id = store.create_run({"name": f"p{who}-r{r}", "dataset": "digits", "methods": []})
            store.set_status(run_id, "running")
            for step in range(CALLS):
                store.log_metrics(run_id, "step", 0, step, {f"m{k}": who * 1e6 + step + k / 10 for k in range(VALUES)})
            store.set_status(run_id, "completed", summary={"who": who, "run": r})
    except BaseException:   # reported to the parent: the test shows the real error, e.g. "database is locked"
        errors.put(f"process {who}: {traceback.format_exc()}")


def test_four_processes_write_at_once_without_losing_a_row(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(PROCS), ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), barrier, errors, i), daemon=True) for i in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    seconds = time.perf_counter() - t0
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, "\n".join(found)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]

    store = Store(tmp_path)
    runs = store.list_runs()
    assert len(runs) == PROCS * RUNS and {r["status"] for r in runs} == {"completed"}
    assert len({r["run_dir"] for r in runs}) == PROCS * RUNS          # no two runs share an id or folder
    for run in runs:
        rows = store.metrics(run["id"], "step")
        assert len(rows) == CALLS * VALUES, run["name"]
        who = run["summary"]["who"]
        assert sorted(r["value"] for r in rows if r["name"] == "m0") == [who * 1e6 + s for s in range(CALLS)]
    total = PROCS * RUNS * CALLS * VALUES
    print(f"\n{PROCS} processes wrote {total} metric rows in {PROCS * RUNS * CALLS} transactions: {seconds:.1f} s")


def _submit(home, barrier, out, who):
    import os
    os.environ["KD_EXPLORER_HOME"] = home
    from explorer import jobs
    barrier.wait()
    out.put(jobs.submit({"role": "teacher", "methods": [], "dataset": "digits", "n_train": 100, "epochs": 1,
                         "probe_size": 0, "device": "cpu", "name": f"submitted-{who}", "seed": who}))


def test_two_submissions_at_once_both_run_to_completion(tmp_path, monkeypatch):
    jobs = pytest.importorskip("explorer.jobs")
    home = str(tmp_path / "home")
    monkeypatch.setenv("KD_EXPLORER_HOME", home)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_submit, args=(home, barrier, out, i), daemon=True) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    ids = {out.get(timeout=5), out.get(timeout=5)}
    assert len(ids) == 2
    store = Store(home)
    finished = [jobs.wait(i, timeout=400, store=store) for i in ids]
    assert [r["status"] for r in finished] == ["completed", "completed"], [r["message"] for r in finished]
    assert sorted(r["name"] for r in store.list_runs()) == ["submitted-0", "submitted-1"]   # each recorded once
    assert all(r["summary"]["test_acc"] > 0 for r in finished)
