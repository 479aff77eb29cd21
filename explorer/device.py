"""Which device a run computes on, and which reduced precisions that device runs natively."""
from __future__ import annotations

import torch

from .errors import RunFailed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunFailed(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise RunFailed("device 'mps' was asked for but MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 convolutions run natively here (GPUs with bf16; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            caps = torch._C._cpu._get_cpu_capability()   # private, hence the guard: unknown = not fast
        except (AttributeError, RuntimeError):
            return False
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def amp_dtype_for(device: torch.device):
    """The autocast dtype of mixed precision on this device; None where AMP is off (CPU, MPS)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
