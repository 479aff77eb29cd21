"""The one contract every distillation method follows (mdistiller's forward_train, as a class).

A method is an nn.Module built once per run from a PairContext (what the student and teacher
taps look like), holding any trainable pieces it adds (connectors, heads, memory banks).
Called with the student's and teacher's Outputs and the Batch, it returns a dict of named,
*unweighted-by-the-run* loss terms; the run multiplies every term of a method by that method's
weight. Terms a method weights internally (RKD's 25/50) are already weighted inside.
"""
from __future__ import annotations

import math
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
    attentions: list[torch.Tensor] = field(default_factory=list)  # transformers: (B, heads, N, N) per block
    values: list[torch.Tensor] = field(default_factory=list)      # transformers: (B, heads, N, d_head) per block


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
    # transformers: each block's attention shape (heads, N, N); () = the model declares no kd_attention,
    # None = not measured (a PairContext built by hand)
    student_attention: tuple[tuple[int, ...], ...] | None = None
    teacher_attention: tuple[tuple[int, ...], ...] | None = None
    # sequence models: the stages are token states seen as (C, T, 1) maps (models/sequence.py)
    token_states: bool = False


# Logit standardisation as a switch of every logit-based method, so "X + LS" is one hyperparameter
STANDARDIZE = HParam("standardize", False, help="z-score each sample's logits before the softmax (logit "
                     "standardisation, Sun et al., CVPR 2024); the temperature is then its base temperature "
                     "(the paper's configs: 2, with a KD weight of 9)")

# The length of a method's initialisation stage (see Method.init_stage), as a share of the run's epochs
INIT_FRACTION = HParam("init_fraction", 30 / 240, 0.0, 1.0, help="length of the init stage before the main "
                       "training, as a share of the run's epochs, rounded up (RepDistiller: 30 init epochs for a "
                       "240-epoch run = 0.125); 0 = no init stage")


class Method(nn.Module):
    key: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]           # "response" | "feature" | "relation"
    paper: ClassVar[Paper]
    equation: ClassVar[str]           # LaTeX of what forward() computes
    hparams: ClassVar[tuple[HParam, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})   # logits|stages|preact|embedding|attention|values
    default_weight: ClassVar[float] = 1.0
    default_ce_weight: ClassVar[float] = 1.0   # CE weight of the CRD benchmark's standalone recipe
    convention: ClassVar[str] = ""    # which reference convention (reduction, scaling) is followed
    notes: ClassVar[str] = ""         # constraints a user must know (e.g. FSP needs equal channels)
    # An initialisation stage before the main training (RepDistiller's helper/pretrain.py `init`, used for AB,
    # FT and FSP). A method with init_stage = True has the INIT_FRACTION hparam (and may have `init_lr`: 0 = the
    # run's lr) and implements init_parameters(student) and init_loss(s, t, batch); the offline scheme
    # (explorer/schemes/init_stage.py) trains those parameters on that loss with its own SGD for init_epochs()
    # epochs before the student's first main step, then sets the `init_done` buffer (a resumed run skips it).
    init_stage: ClassVar[bool] = False

    def __init__(self, ctx: PairContext, **hp):
        super().__init__()
        self.ctx = ctx
        known = {h.name: h for h in self.hparams}
        unknown = set(hp) - set(known)
        if unknown:
            raise ValueError(f"method {self.key!r}: unknown hyperparameter(s) {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        self.hp = {name: hp.get(name, h.default) for name, h in known.items()}
        if self.init_stage:
            self.register_buffer("init_done", torch.zeros((), dtype=torch.bool))

    def init_epochs(self) -> int:
        """Epochs of the init stage: init_fraction x the run's epochs, rounded up; 0 without one."""
        share = self.hp.get("init_fraction", 0.0) if self.init_stage else 0.0
        return math.ceil(share * self.ctx.epochs - 1e-9) if share > 0 else 0

    def init_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        """What the init stage trains (their requires_grad flags are set for it and restored after)."""
        raise NotImplementedError

    def init_loss(self, s: Outputs | None, t: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        """The init stage's loss terms; s is None when init_parameters holds none of the student's."""
        raise NotImplementedError

    @classmethod
    def check_pair(cls, ctx: PairContext, **hp) -> None:
        """The checks this method makes of a student/teacher pair when it is built (channel or stage counts),
        without building it: recipes.resolve runs them before a run is launched, on stage shapes measured by
        one dry forward pass (explorer.schemes.offline.dry_pair). Raises ValueError. A method whose
        constructor checks the pair overrides this and calls it from __init__, so both are one check."""

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
            "key": cls.key, "name": cls.name, "category": cls.category, **cls.paper.describe(),
            "equation": cls.equation,
            "needs": sorted(cls.needs), "default_weight": cls.default_weight,
            "default_ce_weight": cls.default_ce_weight, "convention": cls.convention, "notes": cls.notes,
            "hparams": [h.describe() for h in cls.hparams], "init_stage": cls.init_stage,
        }


def feature_parameters(model: nn.Module) -> list[nn.Parameter]:
    """A model's parameters except its classifier's (RepDistiller's get_feat_modules): the module named by
    `model.kd_classifier` when declared, else the last nn.Linear; all of them when it has neither."""
    modules = dict(model.named_modules())
    head = modules.get(getattr(model, "kd_classifier", None) or "")
    if head is None:
        linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    skip = {id(p) for p in head.parameters()} if head is not None else set()
    return [p for p in model.parameters() if id(p) not in skip]
