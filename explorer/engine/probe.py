"""Probes: a fixed test batch's logits and taps, saved at chosen epochs, so every analysis view works
on any epoch of a run without its models. A probe has two sides: the student and what it is
compared with -- the run's teacher, a scheme's own reference (a DML peer), or else the dataset's
teacher as a yardstick where one already exists (never trained for the sake of a probe)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import teachers
from ..models.outputs import TapSpecs
from ..speed import no_compile

if TYPE_CHECKING:
    from .run import Trainer
    from .setup import RunState

NOT_LOOKED_UP = object()   # RunState.yardstick until the first probe asks for it


def maybe_capture(trainer: Trainer, state: RunState, epoch: int) -> None:
    if state.cfg.probe_size and epoch in state.cfg.probe_epochs:
        capture(trainer, state, epoch)


@no_compile   # probes hook into modules, which would make compiled models recompile
def capture(trainer: Trainer, state: RunState, epoch: int) -> None:
    # the analysis package pulls in sklearn, scipy and pandas (about a second): only runs that probe pay it
    from ..analysis.probes import capture_probe, save_probe
    cfg, data = state.cfg, state.data
    reference, ref_stages = _reference(trainer, state)
    if reference is None:   # a probe needs both sides, so none is saved
        return
    n = min(cfg.probe_size, len(data.test))
    x, y = data.normalize(data.test.x[:n]), data.test.y[:n]
    captured = {}
    for role, model, stages in (("student", next(iter(state.scheme.eval_models().values())), cfg.student_stages),
                                ("teacher", reference, ref_stages)):
        specs = TapSpecs.of(model, stages)
        # a model outside the zoo may not name an embedding: its deepest stage, flattened, stands in
        # transformers (kd_attention): each block's class-token attention per head and the rollout map too
        captured[role] = capture_probe(model, x, list(specs.stages), specs.embedding or specs.stages[-1],
                                       check_cancel=trainer.check_cancel, attention_specs=specs.attention)
    path = trainer.run_dir / f"probe_epoch{epoch:03d}.pt"
    save_probe(path, epoch, x.cpu(), y.cpu(), torch.arange(n), captured["student"], captured["teacher"])
    trainer.store.add_artifact(trainer.run_id, f"probe_epoch{epoch:03d}", path, "probe")


def _reference(trainer: Trainer, state: RunState) -> tuple[nn.Module | None, list[str] | None]:
    """The "teacher" side of the probes and its stage names (None: the model's own kd_stages)."""
    if state.teacher is not None:
        return state.teacher, state.cfg.teacher_stages
    peer = state.scheme.probe_reference()
    if peer is not None:
        return peer, None
    if state.yardstick is NOT_LOOKED_UP:
        ref = teachers.locate(trainer.store, state.cfg)
        state.yardstick = None if ref.source == "train" else \
            teachers.load(ref, state.make_model(ref.arch), trainer.store)
    return state.yardstick, state.cfg.teacher_stages
