"""Checkpoints are untrusted input: size-checked, loaded with weights_only=True, and checked
layer by layer against the model they are meant for."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

MAX_CHECKPOINT_BYTES = 1 << 30   # 1 GiB: larger than any model in the zoo by 100x


class CheckpointError(ValueError):
    pass


def read_state_dict(path: str | Path, key: str | None = None, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"checkpoint {path.name} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                              "limit; a state_dict of a zoo model is far smaller")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":   # torch's zip format, or its legacy pickle format
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (it starts with {magic!r}, neither a zip "
                              "archive nor a pickle). Expected a file written by torch.save(model.state_dict(), path).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path.name} was refused: it holds Python objects beyond tensors and plain containers, which "
            f"weights_only loading never executes ({str(e).splitlines()[0][:160]}). Save the model with "
            "torch.save(model.state_dict(), path) and upload that.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'}). Expected a file written "
                              "by torch.save(model.state_dict(), path).") from None
    if isinstance(obj, dict) and key is not None and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name} does not hold a state_dict (a mapping of layer names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}   # DDP-saved names load too


def load_checkpoint_into(model: nn.Module, path: str | Path, key: str | None = None) -> nn.Module:
    state = read_state_dict(path, key)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatches: " + "; ".join(wrong[:8]) + (" ..." if len(wrong) > 8 else ""))
        if missing:
            parts.append(f"missing layers: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected layers: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{Path(path).name} does not fit {type(model).__name__} "
                              f"(is it another architecture or class count?): " + " | ".join(parts))
    model.load_state_dict(state)
    return model
