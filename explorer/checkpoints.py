"""Checkpoints are untrusted input: size-checked, loaded with weights_only=True, and checked
layer by layer against the model they are meant for."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from .bounds import (CHECKPOINT_MAX_MEMBERS, CHECKPOINT_MAX_RATIO, CHECKPOINT_MAX_UNPACKED, BoundError,
                     UPLOAD_CHECKPOINT_MAX_UNPACKED, expansion_problem, zip_members)
from .errors import scrub

MAX_CHECKPOINT_BYTES = 1 << 30   # 1 GiB: larger than any model in the zoo by 100x


class CheckpointError(ValueError):
    pass


STATE_DICT_FIX = "Expected a file written by torch.save(model.state_dict(), path)."


def load_weights_only(path: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES,
                      max_unpacked: int = CHECKPOINT_MAX_UNPACKED, map_location="cpu", fix: str = STATE_DICT_FIX):
    """torch.load(weights_only=True) of an untrusted file, every failure a CheckpointError naming the file
    and `fix` (what to do). The one loader for uploads, teachers, a run's own checkpoint and `doctor`;
    torch's text is cut to its cause, never its advice to load the file unsafely (errors.scrub)."""
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
                              f"archive nor a pickle). {fix}")
    if magic == b"PK":
        _check_zip_expansion(path, size, max_unpacked)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path.name} was refused: it holds Python objects beyond tensors and plain containers, which "
            f"are never loaded or run ({_torch_reason(e)}). {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, MemoryError) as e:   # a torn or tampered file can fail anywhere inside torch.load
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint, or it is damaged ({type(e).__name__}: "
                              f"{_torch_reason(e)}). {fix}") from None


def _torch_reason(e: BaseException) -> str:
    """The cause in torch's message: its first sentence that is neither preamble nor unsafe advice."""
    lines = [re.sub(r"^WeightsUnpickler error:\s*", "", line.strip()) for line in scrub(str(e)).splitlines()]
    lines = [line for line in lines if line and line.rstrip(".") != "Weights only load failed"]
    return re.split(r"(?<=[.!?])\s+", lines[0])[0][:200] if lines else "unreadable"


def read_state_dict(path: str | Path, key: str | None = None, max_bytes: int = MAX_CHECKPOINT_BYTES,
                    max_unpacked: int = CHECKPOINT_MAX_UNPACKED) -> dict:
    path = Path(path)
    obj = load_weights_only(path, max_bytes, max_unpacked)
    if isinstance(obj, dict) and key is not None and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif (isinstance(obj, dict) and key is None and isinstance(obj.get("student"), dict)
          and not all(isinstance(v, torch.Tensor) for v in obj.values())):
        obj = obj["student"]    # the app's own layout: a run's model.pt, a bundled teacher ({"student": ...})
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name} does not hold a state_dict (a mapping of layer names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}   # DDP-saved names load too


def _check_zip_expansion(path: Path, size: int, max_unpacked: int) -> None:
    """What torch.load would allocate is what the central directory declares: bound it before loading
    (a torch.save zip re-compressed with DEFLATE turns 400 KB into 400 MiB)."""
    try:
        with open(path, "rb") as f:
            zf, members = zip_members(f, f"checkpoint {path.name}", CHECKPOINT_MAX_MEMBERS, "CHECKPOINT_MAX_MEMBERS")
            zf.close()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (an unreadable zip: {e}). Expected a file "
                              "written by torch.save(model.state_dict(), path).") from None
    except BoundError as e:   # over the member bound
        raise CheckpointError(str(e)) from None
    bound = {CHECKPOINT_MAX_UNPACKED: "CHECKPOINT_MAX_UNPACKED",
             UPLOAD_CHECKPOINT_MAX_UNPACKED: "UPLOAD_CHECKPOINT_MAX_UNPACKED"}.get(max_unpacked, "max_unpacked")
    problem = expansion_problem(sum(m.file_size for m in members), size, max_unpacked, CHECKPOINT_MAX_RATIO,
                                (bound, "CHECKPOINT_MAX_RATIO"))
    if problem:
        raise CheckpointError(f"{path.name} was refused: {problem}")


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
        hint = ("another architecture or vocabulary? A language model's classes are its tokens: a character-level "
                "teacher does not fit a -bpe dataset" if hasattr(model, "vocab") else
                "another architecture or class count?")
        raise CheckpointError(f"{Path(path).name} does not fit {type(model).__name__} ({hint}): " + " | ".join(parts))
    model.load_state_dict(state)
    return model
