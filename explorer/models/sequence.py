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


# Feature methods on a sequence model's blocks. A block's state (B, T, C) is seen by every feature method as a
# (B, C, T, 1) map -- channels the hidden width, one row per token (taps.py applies it when it records a sequence
# model's token taps) -- so a 1x1-conv regressor is a per-token linear map W h_t (+ b), TinyBERT's hidden-state
# transfer MSE(H_S W_h, H_T) (Jiao et al., Findings of EMNLP 2020, Eq. 8) when FitNet is the method. The methods
# below were each run on pydoc (gpt_4x128 -> gpt_1x32) and read what their papers read in any representation: a
# regression of the teacher's state, or relations between the batch's samples. recipes.py refuses the other stage
# methods for text, naming these: at and nst ran, but they compare distributions over an image's spatial positions
# (where a stage is active, each channel's spatial selectivity) and neither paper nor code says what they mean
# over a causal window; ab and ofd read pre-ReLU margins, which a pre-norm block has not; ft's 3x3 paraphraser is
# made for image grids; simkd, reviewkd, ofa and catkd pool a stage into one prediction per image (three of them
# fail on token rows); fsp and kdsvd need two paired stages of equal widths.
TOKEN_STATE_METHODS = {
    "fitnet": "per-token regression of the teacher's hidden state (TinyBERT's hidden-state loss)",
    "vid": "per-token regression with a learnt per-channel variance (variational information distillation)",
    "sp": "which windows of the batch the model represents alike (the batch Gram matrix of hidden states)",
    "irg": "the distances between the batch's windows in hidden-state space (instance relationship graph)",
}


# embedding methods that read the token rows (B*T, C) but cannot run on them, and why (said before launch)
TOKEN_ROW_REFUSED = {
    "crd": "its memory bank keeps one embedding per training sample, a window, while a language model gives one "
           "per token",
    "rkd": "its angle term compares every triple of the batch's token rows (about 10^9 at batch 16 x 64 tokens)",
}


def token_map(states: torch.Tensor) -> torch.Tensor:
    """(B, T, C) token states -> the (B, C, T, 1) map feature methods read (a view: no copy)."""
    return states.transpose(1, 2).unsqueeze(-1)


def token_rows(stage: torch.Tensor) -> torch.Tensor:
    """A sequence model's tapped stage, (B, C, T, 1) -> its tokens as rows (B*T, C), in (window, position) order."""
    return stage.squeeze(-1).transpose(1, 2).reshape(-1, stage.shape[1])
