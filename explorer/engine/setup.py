"""Everything a run is built from, in the order that keeps a seed reproducible: data, teacher, student,
scheme, optimiser and schedule, then a resumed checkpoint on top -- gathered in one RunState."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .. import teachers
from ..config import RunConfig
from ..custom_code import custom_model_factory, is_custom
from ..data import Dataset, load_dataset
from ..device import amp_dtype_for, resolve_device
from ..dot import DistillationOrientedTrainer
from ..models import create_model
from ..models.sequence import build_args
from ..schemes import RunContext, Scheme, get_scheme
from ..speed import prepare_student, prepare_teacher
from ..teachers import TeacherRef
from . import checkpoint
from .loop import evaluate
from .probe import NOT_LOOKED_UP

if TYPE_CHECKING:
    from .run import Trainer


@dataclass
class RunState:
    """What a run is made of: built once by `build`; the loop advances `step`, a resume sets `start_epoch`."""
    cfg: RunConfig
    device: torch.device
    data: Dataset
    make_model: Callable[[str], nn.Module]
    scheme: Scheme
    stepper: nn.Module                  # what takes the steps: the scheme, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator                # the batches' order and augmentation
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    steps_per_epoch: int
    teacher: nn.Module | None           # the run's frozen teacher; None for teacher-less schemes
    teacher_acc: float | None
    teacher_ref: TeacherRef | None      # where the run's teacher came from (recorded with the run)
    ckpt_path: Path
    start_epoch: int = 0
    step: int = 0
    yardstick: object = NOT_LOOKED_UP   # the probes' reference for teacher-less schemes (probe.py)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch


def build(trainer: Trainer, resume: bool) -> RunState:
    cfg, dist = trainer.config, trainer.dist
    device = dist.device if dist is not None else resolve_device(cfg.device)
    trainer.store.update_run(trainer.run_id, device=str(device))
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.n_train, device, cfg.image_size)
    build_model = partial(make_model, data=data, device=device)
    refs: list[TeacherRef] = []   # every teacher this run loads; the first is the one recorded as its teacher

    def load_teacher(arch: str) -> nn.Module:
        model, ref = frozen_teacher(trainer, build_model, arch)
        if not refs:
            teachers.record(trainer.store, trainer.run_id, ref)
        refs.append(ref)
        return model

    teacher = teacher_acc = None
    if get_scheme(cfg.scheme).needs_teacher and cfg.role == "distill":
        teacher = prepare_teacher(load_teacher(cfg.teacher), cfg)
        teacher_acc = (evaluate(teacher, data, "test", cfg.batch_size * 4, trainer.check_cancel)
                       if trainer.main else None)
    torch.manual_seed(cfg.seed)   # the student's init must not depend on whether a teacher was trained
    student = prepare_student(build_model(cfg.student), cfg)
    steps = data.steps_per_epoch(cfg.batch_size, drop_last=dist is not None)
    ctx = RunContext(cfg, data, device, student, teacher, build_model, steps, cfg.epochs, load_teacher=load_teacher,
                     check_cancel=trainer.check_cancel, log=lambda message: trainer.emit("log", message=message),
                     progress=trainer.phase_progress)
    scheme = get_scheme(cfg.scheme)(ctx, **cfg.scheme_params).to(device)
    opt = make_optimizer(cfg, [p for p in scheme.parameters() if p.requires_grad], device)
    amp_dtype = amp_dtype_for(device) if cfg.amp else None
    state = RunState(
        cfg=cfg, device=device, data=data, make_model=build_model, scheme=scheme, stepper=scheme, opt=opt,
        sched=make_schedule(cfg, opt, steps), gen=torch.Generator().manual_seed(cfg.seed), amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None, steps_per_epoch=steps,
        teacher=teacher, teacher_acc=teacher_acc, teacher_ref=refs[0] if refs else None,
        ckpt_path=trainer.run_dir / "checkpoint.pt")
    if resume:
        checkpoint.restore(trainer, state)
    if dist is not None:   # after the restore: the wrap broadcasts rank 0's state to every rank
        state.stepper = dist.wrap(scheme)
    return state


def make_model(arch: str, data: Dataset, device: torch.device) -> nn.Module:
    """A fresh model for `data`: from the zoo, or the user's own factory ('import:pkg.module:factory').
    Text data: num_classes = its vocabulary, image_size = its context length (models/sequence.py build_args)."""
    build = custom_model_factory(arch) if is_custom(arch) else partial(create_model, arch)
    return build(**build_args(data.shape, data.num_classes)).to(device)


def frozen_teacher(trainer: Trainer, build_model, arch: str) -> tuple[nn.Module, TeacherRef]:
    """The teacher `arch` for this run, frozen: found by teachers.locate, or trained now (once)."""
    ref = teachers.locate(trainer.store, trainer.config, arch)
    if trainer.dist is not None:   # rank 0's store decides for every rank whether to train one
        ref = trainer.dist.from_main(ref)
    if ref.source == "train":
        ref = trainer.train_teacher(arch)   # every rank takes part; rank 0 records it
    elif ref.source == "bundled":
        trainer.emit("log", message=f"teacher {arch}: the bundled data/teachers/{Path(ref.path).name} (no training)")
    # under torchrun only rank 0 reads the weights; Dist.wrap broadcasts them (the teacher is in the scheme)
    return teachers.load(ref, build_model(arch), trainer.store, weights=trainer.main), ref


def make_optimizer(cfg: RunConfig, params, device: torch.device):
    fused = device.type == "cuda"
    # elsewhere, foreach: one kernel per op over all parameters (bitwise the same as the per-parameter loop)
    kernels = dict(fused=True) if fused else dict(foreach=True)
    if cfg.optimizer == "dot":
        return DistillationOrientedTrainer(params, lr=cfg.lr, momentum=cfg.momentum, delta=cfg.dot_delta,
                                           weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0, **kernels)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernels)


def make_schedule(cfg: RunConfig, opt, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        f = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    elif cfg.schedule == "step":   # x0.1 at 5/8, 6/8, 7/8 of the run: the CRD recipe's 150/180/210 of 240
        f = lambda s: 0.1 ** sum(s >= total * q for q in (0.625, 0.75, 0.875))
    else:
        f = lambda s: 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, f)
