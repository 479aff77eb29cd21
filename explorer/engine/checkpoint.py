"""A run's checkpoint: everything needed to continue it bit for bit -- the scheme (every learning model
and method), optimiser, schedule, the batch generator and the global RNGs."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ..errors import RunFailed

if TYPE_CHECKING:
    from .run import Trainer
    from .setup import RunState


def save(trainer: Trainer, state: RunState, epoch: int) -> None:
    path = state.ckpt_path
    ckpt = {"scheme": state.scheme.state_dict(), "optimizer": state.opt.state_dict(),
            "schedule": state.sched.state_dict(), "generator": state.gen.get_state(), "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)     # atomic: a crash mid-save never leaves a torn checkpoint
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunFailed(f"could not save the checkpoint to {path}: {e.strerror or e}. "
                        "Free disk space or set KD_EXPLORER_HOME to a folder on a larger disk.") from e
    trainer.store.add_artifact(trainer.run_id, "checkpoint", path, "checkpoint")


def restore(trainer: Trainer, state: RunState) -> None:
    """Continue from the last checkpoint, dropping the metrics recorded after it; with none (killed
    before its first save) the run starts over."""
    dist, path = trainer.dist, state.ckpt_path
    ckpt = None
    if path.exists():
        ckpt = torch.load(path, map_location=state.device if dist is None else "cpu", weights_only=True)
    if dist is not None:   # rank 0's checkpoint, for every rank (it may be on another machine)
        ckpt = dist.from_main(ckpt)
    if ckpt is None:
        trainer.store.delete_metrics_after(trainer.run_id, -1)
        return
    state.scheme.load_state_dict(ckpt["scheme"])
    state.opt.load_state_dict(ckpt["optimizer"])
    state.sched.load_state_dict(ckpt["schedule"])
    state.gen.set_state(ckpt["generator"])
    if "torch_rng" in ckpt:   # anything drawing from the global RNG (dropout, sampling) continues too
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if torch.cuda.is_available() and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["cuda_rng"]])
    state.start_epoch = ckpt["epoch"] + 1
    state.step = state.start_epoch * state.steps_per_epoch
    trainer.store.delete_metrics_after(trainer.run_id, ckpt["epoch"])
