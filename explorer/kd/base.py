"""The one contract every distillation method follows (mdistiller's forward_train, as a class).

A method is an nn.Module built once per run from a PairContext (what the student and teacher
taps look like), holding any trainable pieces it adds (connectors, heads, memory banks).
Called with the student's and teacher's Outputs and the Batch, it returns a dict of named,
*unweighted-by-the-run* loss terms; the run multiplies every term of a method by that method's
weight. Terms a method weights internally (RKD's 25/50) are already weighted inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..spec import HParam, Paper  # noqa: F401  (the method contract's vocabulary)
from .functional import standardize


@dataclass
class Outputs:
    """What a model produced on a batch: logits plus whatever taps the methods asked for."""
    logits: torch.Tensor
    stages: list[torch.Tensor] = field(default_factory=list)   # post-activation, shallow -> deep
    preact: list[torch.Tensor] = field(default_factory=list)   # same stages before their last ReLU
    embedding: torch.Tensor | None = None                     # (B, D) penultimate feature


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor          # row indices into the training set (CRD's memory bank needs them)
    epoch: int = 0               # 0-based
    step: int = 0                # global step
    progress: float = 0.0        # fraction of the run done, in [0, 1]
    view: torch.Tensor | None = None   # augmented view id per row (data.draw_views); None = not augmented


@dataclass(frozen=True)
class PairContext:
    """Shapes of the pair's taps, measured by one dry forward pass, and the run's budget."""
    student_stages: tuple[tuple[int, ...], ...]   # (C, H, W) per stage
    teacher_stages: tuple[tuple[int, ...], ...]
    student_embedding: int
    teacher_embedding: int
    num_classes: int
    n_train: int
    epochs: int
    steps_per_epoch: int
    pairs: tuple[tuple[int, int], ...] | None = None  # explicit (student stage, teacher stage) override


# Logit standardisation as a switch of every logit-based method, so "X + LS" is one hyperparameter
STANDARDIZE = HParam("standardize", False, help="z-score each sample's logits before the softmax (logit "
                     "standardisation, Sun et al., CVPR 2024); the temperature is then its base temperature "
                     "(the paper's configs: 2, with a KD weight of 9)")


class Method(nn.Module):
    key: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]           # "response" | "feature" | "relation"
    paper: ClassVar[Paper]
    equation: ClassVar[str]           # LaTeX of what forward() computes
    hparams: ClassVar[tuple[HParam, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})   # logits | stages | preact | embedding
    default_weight: ClassVar[float] = 1.0
    default_ce_weight: ClassVar[float] = 1.0   # CE weight of the CRD benchmark's standalone recipe
    convention: ClassVar[str] = ""    # which reference convention (reduction, scaling) is followed
    notes: ClassVar[str] = ""         # constraints a user must know (e.g. FSP needs equal channels)

    def __init__(self, ctx: PairContext, **hp):
        super().__init__()
        self.ctx = ctx
        known = {h.name: h for h in self.hparams}
        unknown = set(hp) - set(known)
        if unknown:
            raise ValueError(f"method {self.key!r}: unknown hyperparameter(s) {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        self.hp = {name: hp.get(name, h.default) for name, h in known.items()}

    def forward(self, s: Outputs, t: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def response_logits(self, s: Outputs, t: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's and the (detached) teacher's logits, standardised when the method's
        `standardize` switch is on."""
        zs, zt = s.logits, t.logits.detach()
        if self.hp.get("standardize"):
            zs, zt = standardize(zs), standardize(zt)
        return zs, zt

    @classmethod
    def describe(cls) -> dict:
        return {
            "key": cls.key, "name": cls.name, "category": cls.category,
            "paper": cls.paper.title, "authors": cls.paper.authors, "year": cls.paper.year,
            "venue": cls.paper.venue, "arxiv": cls.paper.arxiv, "equation": cls.equation,
            "needs": sorted(cls.needs), "default_weight": cls.default_weight,
            "default_ce_weight": cls.default_ce_weight, "convention": cls.convention, "notes": cls.notes,
            "hparams": [h.describe() for h in cls.hparams],
        }
