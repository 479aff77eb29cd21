"""Offline KD: a frozen, pretrained teacher; the student learns CE plus weighted knowledge terms."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..kd import get_method
from ..kd.base import Batch, Outputs, PairContext, Paper
from ..models.outputs import TapSpecs, forward_outputs
from ..models.sequence import is_sequence, is_text_shape
from ..speed import TeacherCache
from .base import RunContext, Scheme, register_scheme
from .init_stage import run_init_stages


def build_methods(config, student: nn.Module, teacher: nn.Module, ctx: RunContext,
                  s_specs: TapSpecs, t_specs: TapSpecs) -> tuple[nn.ModuleList, list[float], float]:
    """Instantiate the config's knowledge terms for a student/teacher pair; returns methods,
    their run weights and the CE weight (config's, else the benchmark default of the methods)."""
    classes = [get_method(term.key) for term in config.methods]
    if not classes:
        return nn.ModuleList(), [], 1.0 if config.ce_weight is None else config.ce_weight
    pair = measure_pair(student, teacher, s_specs, t_specs, ctx, config)
    methods = nn.ModuleList()
    for cls, term in zip(classes, config.methods):
        method = cls(pair, **term.params)
        if hasattr(method, "attach_teacher"):
            method.attach_teacher(teacher)
        if hasattr(method, "attach_student"):   # e.g. CAT-KD reads the student's classifier (not its parameter)
            method.attach_student(student)
        methods.append(method)
    weights = [cls.default_weight if term.weight is None else term.weight for cls, term in zip(classes, config.methods)]
    ce = config.ce_weight if config.ce_weight is not None else min(cls.default_ce_weight for cls in classes)
    return methods.to(ctx.device), weights, ce


@torch.no_grad()
def tap_shapes(model: nn.Module, specs: TapSpecs, x: torch.Tensor):
    """(each stage's (C, H, W), the embedding's width or 0, each block's attention (heads, N, N) or ()) of
    `model`'s taps, from one forward pass on `x`."""
    was = model.training
    model.eval()
    needs = {"stages"} | ({"embedding"} if specs.embedding else set()) | ({"attention"} if specs.attention else set())
    out = forward_outputs(model, x, needs, specs)
    model.train(was)
    return (tuple(tuple(f.shape[1:]) for f in out.stages), out.embedding.shape[1] if out.embedding is not None else 0,
            tuple(tuple(a.shape[1:]) for a in out.attentions))


def measure_pair(student, teacher, s_specs, t_specs, ctx: RunContext, config) -> PairContext:
    """One dry forward pass on two training images to learn the taps' shapes."""
    x, _, _ = next(ctx.dataset.batches("train", 2))
    (s_st, s_emb, s_att), (t_st, t_emb, t_att) = tap_shapes(student, s_specs, x), tap_shapes(teacher, t_specs, x)
    return PairContext(s_st, t_st, s_emb, t_emb, ctx.dataset.num_classes, len(ctx.dataset.train),
                       ctx.epochs, ctx.steps_per_epoch,
                       tuple(tuple(p) for p in config.stage_pairs) if config.stage_pairs else None, s_att, t_att,
                       is_sequence(student))


@lru_cache(maxsize=64)
def _zoo_tap_shapes(arch: str, num_classes: int, shape: tuple[int, int, int], stages: tuple[str, ...] | None):
    from ..models import create_model
    from ..models.sequence import build_args, dummy_input
    model = create_model(arch, **build_args(shape, num_classes))
    return tap_shapes(model, TapSpecs.of(model, list(stages) if stages else None), dummy_input(shape))


def dry_pair(config, student: str, teacher: str, shape: tuple[int, int, int], num_classes: int) -> PairContext:
    """The PairContext a run of `config` would measure (measure_pair), without its data: zoo models built on
    the CPU and one dry forward pass on zeros of the dataset's shape (the shapes are cached per model)."""
    s_st, s_emb, s_att = _zoo_tap_shapes(student, num_classes, tuple(shape), tuple(config.student_stages or ()) or None)
    t_st, t_emb, t_att = _zoo_tap_shapes(teacher, num_classes, tuple(shape), tuple(config.teacher_stages or ()) or None)
    return PairContext(s_st, t_st, s_emb, t_emb, num_classes, config.n_train or 0, config.epochs or 1, 1,
                       tuple(tuple(p) for p in config.stage_pairs) if config.stage_pairs else None, s_att, t_att,
                       is_text_shape(shape))


def union_needs(methods) -> frozenset[str]:
    needs = set()
    for m in methods:
        needs |= m.needs
    return frozenset(needs | {"logits"})


@register_scheme
class Offline(Scheme):
    key = "offline"
    name = "Offline KD"
    category = "offline"
    paper = Paper("Geoffrey Hinton, Oriol Vinyals, Jeff Dean", "Distilling the Knowledge in a Neural Network",
                  2015, "NeurIPS Deep Learning Workshop", "1503.02531")
    equation = r"\mathcal{L} = w_{CE}\,\mathrm{CE}(z_s, y) + \sum_m w_m \mathcal{L}_m(s, t)"
    needs_teacher = True
    uses_methods = True
    notes = "The teacher is pretrained and frozen (eval mode, no gradient). With no knowledge terms this is the student alone."

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        cfg = ctx.config
        self.student = ctx.student
        self.teacher = ctx.teacher   # frozen: requires_grad False, kept in eval mode by train()
        self.s_specs = TapSpecs.of(self.student, cfg.student_stages) if cfg.methods else None
        self.t_specs = TapSpecs.of(self.teacher, cfg.teacher_stages) if cfg.methods else None
        self.methods, self.weights, self.ce_weight = build_methods(
            cfg, self.student, self.teacher, ctx, self.s_specs, self.t_specs)
        self.needs = union_needs(self.methods)
        # config.teacher_cache: the frozen teacher's logits, reused per (sample, augmented view)
        self.teacher_cache = TeacherCache.for_run(ctx) if cfg.teacher_cache and self.methods else None
        self._init_stages_checked = False   # methods declaring an init stage run it at the first step

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def teacher_outputs(self, batch: Batch) -> Outputs:
        if self.teacher_cache is not None:
            return Outputs(self.teacher_cache.logits(self.teacher, batch))
        with torch.no_grad():
            return forward_outputs(self.teacher, batch.x, self.needs, self.t_specs)

    def train_step(self, batch: Batch):
        if not self.methods:
            logits = self.student(batch.x)
            return logits, {"ce": self.ce_weight * F.cross_entropy(logits, batch.y)}
        if not self._init_stages_checked:
            run_init_stages(self.ctx, self.student, self.teacher, self.methods, self.s_specs, self.t_specs)
            self._init_stages_checked = True
        t = self.teacher_outputs(batch)
        s = forward_outputs(self.student, batch.x, self.needs, self.s_specs)
        losses = {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.y)} if self.ce_weight else {}
        for method, weight in zip(self.methods, self.weights):
            for name, value in method(s, t, batch).items():
                losses[name] = weight * value
        return s.logits, losses

    def eval_models(self):
        return {"student": self.student}
