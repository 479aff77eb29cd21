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
    # transformers: modules whose outputs are each block's attention probabilities (B, heads, N, N) and values
    # (B, heads, N, d_head), declared as model.kd_attention / model.kd_values; empty for other models
    attention: tuple[str, ...] = ()
    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, model: nn.Module, stages: list[str] | None = None) -> "TapSpecs":
        """The zoo's declared taps, or explicit stage names for any other model."""
        heads = (tuple(getattr(model, "kd_attention", ()) or ()), tuple(getattr(model, "kd_values", ()) or ()))
        if stages:
            return cls(tuple(stages), tuple(stages), getattr(model, "kd_embedding", None), *heads)
        return cls(tuple(stage_specs(model)), tuple(stage_specs(model, preact=True)), embedding_spec(model), *heads)


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
    for need, specs_of_need in (("attention", specs.attention), ("values", specs.values)):
        if need in needs:
            if not specs_of_need:
                raise ValueError(f"{type(model).__name__} has no {need} taps: this method needs a transformer "
                                 f"that declares kd_{need} (e.g. the zoo's vit_* models)")
            wanted += specs_of_need
    if not wanted:
        return Outputs(model(x))
    with tap(model, wanted) as feats:
        logits = model(x)
    return Outputs(
        logits,
        [feats[s] for s in specs.stages] if "stages" in needs else [],
        [feats[s] for s in specs.preact] if "preact" in needs else [],
        feats[specs.embedding].flatten(1) if "embedding" in needs else None,
        [feats[s] for s in specs.attention] if "attention" in needs else [],
        [feats[s] for s in specs.values] if "values" in needs else [],
    )
