"""Forward FLOPs from torch's own operator counter: every matrix product and convolution, attention included."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass per example, as 2 x the multiply-accumulates of every mm/bmm/conv/attention op.

    Counting operators rather than hooking Conv2d/Linear modules also counts a transformer's attention products
    (QK^T and attention @ V), which are most of a small-patch ViT's cost (3x its linear layers at 256 tokens);
    for CNNs the two counts are equal (tests/unit/test_models.py)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // example.shape[0]
