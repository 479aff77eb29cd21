"""Feature taps: forward hooks on named modules, so any nn.Module can be distilled.

A tap spec is a module name as in `model.named_modules()` ("layer2", "layer3.4.relu"),
optionally suffixed ":in" to record the module's input instead of its output -- used for
pre-activation features: the input of a block's final ReLU.

Transformers: a model that sets `kd_prefix_tokens` (the class/distillation tokens before the patch tokens) has
every 3-D token tap (B, N, C) returned as a (B, C, h, w) map of its patch tokens, so spatial methods and pages
work on it unchanged; attention taps (B, heads, N, N) are returned as they are.

Sequence models (`sequence = True`, models/sequence.py): every 3-D token tap (B, T, C) is returned as the
(B, C, T, 1) map of sequence.token_map, one row per token, so the feature methods of sequence.TOKEN_STATE_METHODS
read block states unchanged; their attention taps (4-D) and the (B*T, C) embedding tap are returned as they are.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from .sequence import is_sequence, token_map


class TapError(ValueError):
    pass


def _resolve(model: nn.Module, spec: str) -> tuple[nn.Module, bool]:
    name, _, where = spec.partition(":")
    if where not in ("", "in", "out"):
        raise TapError(f"tap {spec!r}: suffix must be ':in' or ':out'")
    modules = dict(model.named_modules())
    if name not in modules:
        candidates = [n for n in modules if n and n.count(".") <= 1][:40]
        raise TapError(
            f"tap {spec!r}: {type(model).__name__} has no module named {name!r}. "
            f"Top-level and second-level modules: {', '.join(candidates)}")
    return modules[name], where == "in"


@contextmanager
def tap(model: nn.Module, specs: list[str] | tuple[str, ...]):
    """Record named modules' outputs (or inputs) during forward passes inside the block.

        with tap(model, ["layer1", "layer2"]) as feats:
            logits = model(x)
        feats["layer1"]  # tensor

    Accessing a spec whose hook never fired raises TapError naming it.
    """
    feats = TapResult(specs, getattr(model, "kd_prefix_tokens", None), is_sequence(model))
    handles = []
    for spec in dict.fromkeys(specs):
        module, want_input = _resolve(model, spec)

        def hook(m, inp, out, spec=spec, want_input=want_input):
            feats.store(spec, inp[0] if want_input else out)
        handles.append(module.register_forward_hook(hook))
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def tokens_to_map(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, prefix + h*w, C) tokens -> (B, C, h, w): the patch tokens laid out on their square grid."""
    b, n, c = tokens.shape
    side = math.isqrt(n - prefix)
    if side * side != n - prefix:
        raise TapError(f"{n - prefix} patch tokens (after {prefix} prefix tokens) do not form a square grid")
    return tokens[:, prefix:].transpose(1, 2).reshape(b, c, side, side)


class TapResult(dict):
    def __init__(self, specs, prefix_tokens: int | None = None, sequence: bool = False):
        super().__init__()
        self.specs = tuple(specs)
        self.prefix_tokens = prefix_tokens
        self.sequence = sequence

    def store(self, spec: str, value):
        if isinstance(value, (tuple, list)):
            value = value[0]
        if self.prefix_tokens is not None and value.dim() == 3:
            value = tokens_to_map(value, self.prefix_tokens)
        elif self.sequence and value.dim() == 3:
            value = token_map(value)
        self[spec] = value

    def __missing__(self, spec):
        if spec in self.specs:
            raise TapError(f"the hook on {spec!r} never fired: that module was not called in forward(). "
                           "Pick a module that the model's forward actually uses.")
        raise KeyError(spec)

    def ordered(self) -> list[torch.Tensor]:
        return [self[s] for s in self.specs]


def stage_specs(model: nn.Module, preact: bool = False) -> list[str]:
    """The default stage taps of a zoo model; other models must name their stages."""
    attr = "kd_preact" if preact else "kd_stages"
    specs = getattr(model, attr, None)
    if not specs:
        raise TapError(
            f"{type(model).__name__} does not declare {attr}; pass the stage module names explicitly "
            "(e.g. --teacher-stages layer1,layer2,layer3)")
    return list(specs)


def embedding_spec(model: nn.Module) -> str:
    spec = getattr(model, "kd_embedding", None)
    if not spec:
        raise TapError(f"{type(model).__name__} does not declare kd_embedding; name the module whose "
                       "output is the penultimate (B, D) feature")
    return spec
