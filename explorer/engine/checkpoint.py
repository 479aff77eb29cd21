"""A run's checkpoint: everything needed to continue it bit for bit -- the scheme (every learning model
and method), optimiser, schedule, the batch generator and the global RNGs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checkpoints import STATE_DICT_FIX, CheckpointError, load_weights_only
from ..errors import RunFailed, disk_full_message, free_space, is_disk_full

if TYPE_CHECKING:
    from .run import Trainer
    from .setup import RunState


def save(trainer: Trainer, state: RunState, epoch: int) -> None:
    path = state.ckpt_path
    ckpt = {"scheme": state.scheme.state_dict(), "optimizer": state.opt.state_dict(),
            "schedule": state.sched.state_dict(), "generator": state.gen.get_state(), "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    atomic_save(ckpt, path, "the checkpoint", trainer.run_id)
    trainer.store.add_artifact(trainer.run_id, "checkpoint", path, "checkpoint")


def atomic_save(obj, path: Path, what: str, run_id: str | None = None) -> None:
    """torch.save to a temporary file, then rename: a crash or a full disk mid-save never leaves a torn
    file at `path`, and the temporary file is removed on any failure. A full disk is named as such even
    when torch reports it as a RuntimeError without the errno (errors.is_disk_full)."""
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:   # our handle, closed on failure: unlinking the torn file frees its space
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and is_disk_full(e, path.parent)
        space = free_space(path.parent) if full else None   # as it was when the write failed
        tmp.unlink(missing_ok=True)
        resume = f", then `kd-explorer resume {run_id}`" if run_id else ""
        if full:
            raise RunFailed(f"could not save {what} to {path}: {disk_full_message(path, space)}{resume}.") from None
        if isinstance(e, OSError):
            raise RunFailed(f"could not save {what} to {path}: {e.strerror or e}. Free disk space or set "
                            f"KD_EXPLORER_HOME to a folder on a larger disk{resume}.") from e
        raise


def remove_temp_files(run_dir: Path | None) -> None:
    """Drop the temporary files a failed save left in a run's folder (checkpoint.tmp, probe_*.pt.tmp)."""
    if run_dir is None or not run_dir.is_dir():
        return
    for tmp in run_dir.glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def restore(trainer: Trainer, state: RunState) -> None:
    """Continue from the last checkpoint, dropping the metrics recorded after it; with none (killed
    before its first save) the run starts over."""
    dist, path = trainer.dist, state.ckpt_path
    ckpt = None
    if path.exists():
        ckpt = _load(path, state.device if dist is None else "cpu", trainer.run_id)
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


CHECKPOINT_KEYS = ("scheme", "optimizer", "schedule", "generator", "epoch")


def _load(path: Path, map_location, run_id: str) -> dict:
    """The run's own checkpoint, through the loader uploads use (weights only, bounded): a torn or
    tampered file is refused with what to do, and nothing in it is executed."""
    fix = (f"Nothing from it was loaded or run. To start the run over, move it aside "
           f"(mv {path} {path}.broken) and `kd-explorer resume {run_id}` again; or delete the run.")
    try:
        ckpt = load_weights_only(path, map_location=map_location, fix="")
    except CheckpointError as e:   # (the advice for uploads, to save a state_dict, does not apply here)
        why = str(e).replace(STATE_DICT_FIX, "").rstrip()
        raise RunFailed(f"cannot resume run {run_id} from its checkpoint {path}: {why} {fix}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise RunFailed(f"cannot resume run {run_id} from its checkpoint {path}: it is not a run checkpoint (it "
                        f"lacks {', '.join(k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt)})."
                        f" {fix}")
    return ckpt
