"""Forward FLOPs by hooks on conv and linear layers (the terms that dominate CNN cost)."""
from __future__ import annotations

import torch
from torch import nn


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on `example` counted as 2 x MACs of Conv2d and Linear layers."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kernel_macs = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total += 2 * out.numel() * kernel_macs

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total // example.shape[0]
