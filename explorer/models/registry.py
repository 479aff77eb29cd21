"""Model zoo registry: builders with metadata, in the spirit of timm's create_model/list_models.

A builder takes (num_classes, in_channels, image_size) and returns an nn.Module whose
forward(x) returns logits. Zoo models also carry tap names (see taps.py):
  kd_stages    module names whose outputs are the stage features, shallow -> deep
  kd_preact    tap specs for the same stages before their final ReLU ("name:in" = hook input)
  kd_embedding module name whose output is the flat penultimate embedding (B, D)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "description": self.description}


MODELS: Registry[ModelSpec] = Registry("model", key=lambda m: m.name, package="explorer.models")
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
    """Parameter count and forward FLOPs (2 x multiply-accumulates) for one image."""
    from .flops import count_flops
    model = create_model(name, num_classes, in_channels, image_size)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, torch.zeros(1, in_channels, image_size, image_size))
    return {"name": name, "family": get_model_spec(name).family, "params": params, "flops": flops}
