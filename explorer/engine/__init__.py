"""The engine: one training loop for every method and scheme, read top to bottom.

    run.py         a run's lifecycle and status, its events; `run()` for notebooks
    setup.py       data, models, the teacher (found, or trained once), scheme, optimiser, schedule
    loop.py        epochs, the metrics window, evaluation, divergence checks, cancel polls
    checkpoint.py  atomic saves and bit-exact resumes (RNG state included)
    probe.py       the per-epoch probe captures the analysis views read
"""
from .loop import evaluate, train_batches, training_step
from .run import Event, Trainer, run
from .setup import make_optimizer, make_schedule

__all__ = ["Trainer", "run", "Event", "evaluate", "train_batches", "training_step", "make_optimizer", "make_schedule"]
