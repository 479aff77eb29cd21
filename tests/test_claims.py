"""The engine's headline claim, measured: on digits with 300 training images, KD from the bundled
teacher beats the student alone by at least 3 points of test accuracy (mean of seeds 0, 1, 2),
and each student run finishes in under 20 s wall on 2 CPU cores."""
import time

import torch

from explorer.config import RunConfig
from explorer.engine import Trainer
from explorer.store import Store


def test_kd_beats_student_alone_on_digits_300():
    torch.set_num_threads(1)   # robust when another process shares the cores (2 threads: faster when quiet)
    store = Store()
    acc = {"kd": [], "none": []}
    for method in acc:
        for seed in (0, 1, 2):
            t0 = time.perf_counter()
            r = Trainer(RunConfig(dataset="digits", methods=method, n_train=300, seed=seed), store).run()
            seconds = time.perf_counter() - t0
            assert seconds < 20, f"{method} seed {seed} took {seconds:.1f} s"
            acc[method].append(r["test_acc"])
    assert not store.list_runs(role="teacher"), "the bundled teacher should have been used, not a new one trained"
    gain = sum(acc["kd"]) / 3 - sum(acc["none"]) / 3
    print(f"kd {acc['kd']} none {acc['none']} gain {100 * gain:.2f} points")
    assert gain >= 0.03, f"KD gained only {100 * gain:.2f} points over the student alone"
