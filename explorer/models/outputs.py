"""One forward pass that returns logits plus exactly the taps the distillation methods need."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..kd.base import Outputs
from .taps import embedding_spec, stage_specs, tap


@dataclass(frozen=True)
class TapSpecs:
    stages: tuple[str, ...]
    preact: tuple[str, ...]
    embedding: str | None

    @classmethod
    def of(cls, model: nn.Module, stages: list[str] | None = None) -> "TapSpecs":
        """The zoo's declared taps, or explicit stage names for any other model."""
        if stages:
            return cls(tuple(stages), tuple(stages), getattr(model, "kd_embedding", None))
        return cls(tuple(stage_specs(model)), tuple(stage_specs(model, preact=True)), embedding_spec(model))


def forward_outputs(model: nn.Module, x: torch.Tensor, needs: frozenset[str] | set[str], specs: TapSpecs) -> Outputs:
    wanted: list[str] = []
    if "stages" in needs:
        wanted += specs.stages
    if "preact" in needs:
        wanted += specs.preact
    if "embedding" in needs:
        if specs.embedding is None:
            raise ValueError(f"{type(model).__name__} has no embedding tap; set kd_embedding on the model")
        wanted.append(specs.embedding)
    if not wanted:
        return Outputs(model(x))
    with tap(model, wanted) as feats:
        logits = model(x)
    return Outputs(
        logits,
        [feats[s] for s in specs.stages] if "stages" in needs else [],
        [feats[s] for s in specs.preact] if "preact" in needs else [],
        feats[specs.embedding].flatten(1) if "embedding" in needs else None,
    )
