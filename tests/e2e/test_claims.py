"""The engine's headline claim, measured: on digits with 300 training images, KD from the bundled
teacher beats the student alone by at least 3 points of test accuracy (mean of seeds 0, 1, 2).
The time of a student run (under 20 s wall on 2 CPU cores) is a benchmark: `pytest -m benchmark`."""
import time

import pytest
import torch

from explorer.config import RunConfig
from explorer.engine import Trainer
from explorer.store import Store


def _runs(store):
    """(method, seed) -> (test accuracy, seconds) of the six student runs."""
    torch.set_num_threads(1)   # robust when another process shares the cores (2 threads: faster when quiet)
    out = {}
    for method in ("kd", "none"):
        for seed in (0, 1, 2):
            t0 = time.perf_counter()
            r = Trainer(RunConfig(dataset="digits", methods=method, n_train=300, seed=seed), store).run()
            out[method, seed] = r["test_acc"], time.perf_counter() - t0
    return out


@pytest.mark.benchmark
def test_each_student_run_takes_under_20_s():
    for (method, seed), (_, seconds) in _runs(Store()).items():
        print(f"{method} seed {seed}: {seconds:.1f} s")
        assert seconds < 20, f"{method} seed {seed} took {seconds:.1f} s"


def test_kd_beats_student_alone_on_digits_300():
    store = Store()
    runs = _runs(store)
    acc = {m: [runs[m, seed][0] for seed in (0, 1, 2)] for m in ("kd", "none")}
    assert not store.list_runs(role="teacher"), "the bundled teacher should have been used, not a new one trained"
    gain = sum(acc["kd"]) / 3 - sum(acc["none"]) / 3
    print(f"kd {acc['kd']} none {acc['none']} gain {100 * gain:.2f} points")
    assert gain >= 0.03, f"KD gained only {100 * gain:.2f} points over the student alone"
