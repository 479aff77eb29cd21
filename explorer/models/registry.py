"""Model zoo registry: builders with metadata, in the spirit of timm's create_model/list_models.

A builder takes (num_classes, in_channels, image_size) and returns an nn.Module whose
forward(x) returns logits. Zoo models also carry tap names (see taps.py):
  kd_stages    module names whose outputs are the stage features, shallow -> deep
  kd_preact    tap specs for the same stages before their final ReLU ("name:in" = hook input)
  kd_embedding module name whose output is the flat penultimate embedding (B, D)

Sequence (language) models set `sequence = True` (models/sequence.py, the one rule): forward reads int64 token
ids (B, T) and returns one row of next-token logits per position, (B*T, V), so every loss, metric, method and
scheme sees tokens as samples; they also offer next_token_logits(x) -> (B, T, V) and generate(prompt_ids, n,
temperature, generator). For a text dataset the builder gets num_classes = the vocabulary and image_size = the
context length (in_channels = 1): models/sequence.build_args.

Names starting 'timm:' (timm:resnet18, timm:vit_tiny_patch16_224?patch_size=4) are any timm model, resolved on
demand by models/timm_models.py (family "timm"); they are accepted everywhere a zoo name is, never listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from . import timm_models


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "description": self.description}


class ModelRegistry(Registry):
    """The zoo, plus every timm: name (checked and built by timm_models; not registered, so not listed)."""

    def get(self, key: str) -> ModelSpec:
        if timm_models.is_timm(key):
            return _timm_spec(key)
        return super().get(key)

    def __contains__(self, key: object) -> bool:
        if timm_models.is_timm(key):
            try:
                timm_models.check(key)
            except ValueError:
                return False
            return True
        return super().__contains__(key)


@lru_cache(maxsize=None)
def _timm_spec(name: str) -> ModelSpec:
    try:
        timm_models.check(name)
    except ValueError as e:
        raise KeyError(f"model {name!r}: {e}") from None
    return ModelSpec(name, "timm", partial(timm_models.build, name), timm_models.describe(name))


MODELS: Registry[ModelSpec] = ModelRegistry("model", key=lambda m: m.name, package="explorer.models")
get_model_spec = MODELS.get


def register_model(name: str, family: str, description: str = ""):
    def wrap(builder):
        MODELS.register(ModelSpec(name, family, builder, description))
        return builder
    return wrap


def list_models(family: str | None = None) -> list[str]:
    return MODELS.list(family=family)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return get_model_spec(name).builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@lru_cache(maxsize=None)
def model_info(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> dict:
    """Parameter count and forward FLOPs (2 x multiply-accumulates) for one image (a sequence model: one
    window of image_size tokens)."""
    from .flops import count_flops
    model = create_model(name, num_classes, in_channels, image_size)
    params = sum(p.numel() for p in model.parameters())
    example = (torch.zeros(1, image_size, dtype=torch.int64) if getattr(model, "sequence", False)
               else torch.zeros(1, in_channels, image_size, image_size))
    flops = count_flops(model, example)
    return {"name": name, "family": get_model_spec(name).family, "params": params, "flops": flops}
