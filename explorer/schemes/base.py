"""The scheme contract: *how* knowledge flows (offline, online, self-KD, and the algorithms).

A scheme is an nn.Module owning every model that learns in the run (a student, peers,
auxiliary heads, a generator) plus the distillation methods. The one training loop in
explorer/engine/loop.py calls `train_step` on each batch and sums the weighted loss terms it returns;
`eval_models` names every model to evaluate and store (the first one is "the student").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..kd.base import Batch
from ..registry import Registry
from ..spec import HParam, Paper


@dataclass
class RunContext:
    """What a scheme is built from."""
    config: "object"                  # RunConfig
    dataset: "object"                 # explorer.data.Dataset
    device: torch.device
    student: nn.Module
    teacher: nn.Module | None         # frozen, eval mode; None when the scheme needs no teacher
    make_model: Callable[[str], nn.Module]   # architecture name -> fresh model on the device
    steps_per_epoch: int
    epochs: int
    load_teacher: Callable[[str], nn.Module] | None = None   # arch -> trained frozen teacher (reused/trained)
    # call check_cancel() in every loop of a scheme's own that can last over a second (an assistant's
    # training, image synthesis): it raises RunCancelled once the run is cancelled (the store is polled at
    # most every 0.25 s, so calling it each iteration is cheap); log(message) tells the user what it does
    check_cancel: Callable[[], None] = lambda: None
    log: Callable[[str], None] = lambda message: None
    # progress(phase, done, total, epochs=0, **values): where such a loop stands -- phase names it for people
    # ("assistant cnn_small", "synthesis"), done/total count its steps, epochs (if it has any) its epochs,
    # values (loss, ...) its newest numbers. The trainer stores it (scope "phase", throttled) and the app's
    # run card shows it with its own ETA; call it each step and once at the end (done == total)
    progress: Callable[..., None] = lambda phase, done, total, epochs=0, **values: None


class Scheme(nn.Module):
    key: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]            # offline | online | self | algorithm
    paper: ClassVar[Paper | None] = None
    equation: ClassVar[str] = ""
    hparams: ClassVar[tuple[HParam, ...]] = ()
    needs_teacher: ClassVar[bool] = False
    uses_methods: ClassVar[bool] = False   # whether the config's knowledge terms apply
    notes: ClassVar[str] = ""

    def __init__(self, ctx: RunContext, **hp):
        super().__init__()
        known = {h.name: h for h in self.hparams}
        unknown = set(hp) - set(known)
        if unknown:
            raise ValueError(f"scheme {self.key!r}: unknown hyperparameter(s) {sorted(unknown)}; "
                             f"allowed: {sorted(known) or 'none'}")
        self.check_params(hp)
        self.hp = {name: hp.get(name, h.default) for name, h in known.items()}
        self.ctx = ctx

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Type, range and choices of each given hyperparameter (from its HParam), so a bad value fails
        with its name instead of deep inside a run."""
        known = {h.name: h for h in cls.hparams}
        for name, v in params.items():
            h = known.get(name)
            if h is None:
                raise ValueError(f"scheme {cls.key!r}: unknown hyperparameter {name!r}; "
                                 f"allowed: {sorted(known) or 'none'}")
            problem = h.problem(v)
            if problem is not None:
                raise ValueError(f"scheme {cls.key!r}: {name} {problem} ({h.help})")

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the student's logits on the batch and the weighted loss terms to sum."""
        raise NotImplementedError

    def eval_models(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def epoch_metrics(self) -> dict[str, float]:
        """Values the scheme measured over the epoch (e.g. multi-teacher weights), stored with the epoch's
        metrics; called once per epoch after on_epoch_end."""
        return {}

    def probe_reference(self) -> nn.Module | None:
        """With no teacher, the model the probes record as the "teacher" side (e.g. a DML peer), so the
        analysis views compare the student with it; None = no probes for this run."""
        return None

    def save_artifacts(self, run_dir, store, run_id) -> None:
        """Write anything the app should show (e.g. synthesised images)."""

    @classmethod
    def methods_teacher(cls, config, shape: tuple[int, int, int], num_classes: int) -> str | None:
        """The architecture the config's knowledge terms pair the student with (None: they pair with none),
        for the pairing check made before a run starts (recipes.check_pairing). Raises ValueError."""
        return config.teacher if cls.uses_methods else None

    @classmethod
    def describe(cls) -> dict:
        return {
            "key": cls.key, "name": cls.name, "category": cls.category,
            **(cls.paper.describe() if cls.paper else Paper.describe_none()), "equation": cls.equation,
            "needs_teacher": cls.needs_teacher, "uses_methods": cls.uses_methods, "notes": cls.notes,
            "hparams": [h.describe() for h in cls.hparams],
        }


CATEGORIES = ("offline", "online", "self", "algorithm")

SCHEMES: Registry[type[Scheme]] = Registry("scheme", package="explorer.schemes",
                                           order=lambda c: (CATEGORIES.index(c.category),
                                                                           c.paper.year if c.paper else 0))
register_scheme = SCHEMES.register
get_scheme = SCHEMES.get


def list_schemes(category: str | None = None) -> list[str]:
    return SCHEMES.list(category=category)
