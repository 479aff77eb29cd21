"""The one rule for sequence (language) models, used wherever a model meets a dataset's shape.

A sequence model sets `sequence = True`. It reads int64 token ids (B, T) and returns one row of next-token
logits per position, (B*T, V): cross-entropy, token accuracy and every logit method and scheme then see tokens
as samples, unchanged. It also offers `next_token_logits(x) -> (B, T, V)` and
`generate(prompt_ids, n, temperature, generator) -> (B, T0 + n)` for the analysis views.

A text dataset's shape is (T,) (its context length); its builder is called with num_classes = the vocabulary,
in_channels = 1 and image_size = T (the context length): `build_args` says so once.
"""
from __future__ import annotations

import torch
from torch import nn


SEQUENCE_FAMILIES = ("gpt",)   # the zoo families whose models are sequence models (models/gpt.py)


def is_sequence(model: nn.Module) -> bool:
    return bool(getattr(model, "sequence", False))


def is_sequence_arch(name: str) -> bool:
    """Whether the zoo model `name` is a sequence model (known from its family, without building it)."""
    from .registry import get_model_spec
    return get_model_spec(name).family in SEQUENCE_FAMILIES


def is_text_shape(shape) -> bool:
    return shape is not None and len(tuple(shape)) == 1


def build_args(shape, num_classes: int) -> dict:
    """A builder's keyword arguments for a dataset of `shape`: (C, H, W) images, or (T,) token windows."""
    shape = tuple(shape)
    if is_text_shape(shape):
        return dict(num_classes=num_classes, in_channels=1, image_size=shape[0])
    return dict(num_classes=num_classes, in_channels=shape[0], image_size=shape[1])


def dummy_input(shape, n: int = 2, device=None) -> torch.Tensor:
    """Zeros a model built for `shape` reads: float images (n, C, H, W) or int64 token windows (n, T)."""
    shape = tuple(shape)
    return torch.zeros(n, *shape, dtype=torch.int64 if is_text_shape(shape) else torch.float32, device=device)


def batch_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, T, V) next-token logits of a sequence model on (B, T) windows."""
    if hasattr(model, "next_token_logits"):
        return model.next_token_logits(x)
    return model(x).reshape(x.shape[0], x.shape[1], -1)
