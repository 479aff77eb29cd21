"""Small helpers shared by the analysis modules (not public API)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def as_tensor(x, dtype=None) -> torch.Tensor:
    """numpy / list / tensor -> detached CPU tensor (optionally cast)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
    else:
        t = torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def as_numpy(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    return a.astype(dtype, copy=False) if dtype is not None else a


def labels_numpy(y) -> np.ndarray:
    return as_numpy(y).astype(np.int64).reshape(-1)


@contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule in eval mode; restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def no_grad_leak(model: nn.Module):
    """Whatever an attribution method does, parameters' .grad end up as they were before."""
    saved = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


@contextmanager
def no_inplace_relu(model: nn.Module):
    """Temporarily turn in-place activations off.

    A forward hook (captum's layer attributions) captures a layer's output tensor; an in-place
    ReLU that follows would overwrite it, so Grad-CAM would see post-ReLU values and gradients.
    """
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
