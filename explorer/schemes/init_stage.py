"""The initialisation stage a method may declare (Method.init_stage; RepDistiller's helper/pretrain.py `init`,
which trains AB's connectors and the student's feature layers, FT's paraphraser and FSP's student layers
before the main training). The offline scheme calls run_init_stages at its first step."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RunFailed
from ..kd.base import Batch
from ..models.outputs import TapSpecs, forward_outputs
from .base import RunContext

DIVERGED = 1e4   # an init loss this many times its first batch's has diverged (the run loop's DIVERGED_FACTOR)


def run_init_stages(ctx: RunContext, student: nn.Module, teacher: nn.Module, methods,
                    s_specs: TapSpecs, t_specs: TapSpecs) -> None:
    """Each pending method's init stage in turn: its init_parameters trained on its init_loss for
    init_epochs() epochs of shuffled, augmented training batches, with an SGD of the run's momentum and weight
    decay (lr: the method's `init_lr` when set, else the run's), in full precision (outside the run's
    autocast), the frozen teacher in eval mode. The student is in train mode only when the stage trains some
    of its parameters (as RepDistiller's init, which puts the student in eval mode otherwise). Each epoch's
    mean loss goes to the run's log; the run can be cancelled at every batch."""
    pending = [m for m in methods if getattr(m, "init_stage", False) and not bool(m.init_done)]
    if not pending:
        return
    cfg, data = ctx.config, ctx.dataset
    was_training = student.training
    student_ids = {id(p) for p in student.parameters()}
    for method in pending:
        epochs = method.init_epochs()
        params = list(method.init_parameters(student)) if epochs > 0 else []
        if not params:
            method.init_done.fill_(True)
            continue
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        trains_student = any(id(p) in student_ids for p in params)
        lr = method.hp.get("init_lr") or cfg.lr
        opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed + 11)
        needs = frozenset(method.needs | {"logits"})
        student.train(trains_student)
        method.train()
        ctx.log(f"{method.key}: init stage, {epochs} epoch(s) before the student's first step")
        try:
            first = None
            with torch.autocast(ctx.device.type, enabled=False):
                for epoch in range(epochs):
                    total, n = 0.0, 0
                    for x, y, idx in data.batches("train", cfg.batch_size, shuffle=True, augment=cfg.augment,
                                                  generator=gen):
                        ctx.check_cancel()
                        with torch.no_grad():
                            t = forward_outputs(teacher, x, needs, t_specs)
                        s = forward_outputs(student, x, needs, s_specs) if trains_student else None
                        loss = sum(method.init_loss(s, t, Batch(x, y, idx, epoch=epoch)).values())
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total, n = total + loss.detach(), n + 1
                        first = loss.detach() if first is None else first
                    mean = float(total) / max(n, 1)
                    if n and (not math.isfinite(mean) or abs(mean) > DIVERGED * max(abs(float(first)), 1.0)):
                        knob = f"--param {method.key}.init_lr" if "init_lr" in method.hp else "--lr"
                        raise RunFailed(f"{method.key}: the init stage's loss diverged in init epoch {epoch + 1} "
                                        f"(mean {mean:.4g}, first batch {float(first):.4g}, lr {lr:g}); lower the "
                                        f"lr ({knob}), or skip the stage "
                                        f"(--param {method.key}.init_fraction=0)")
                    ctx.log(f"{method.key}: init epoch {epoch + 1}/{epochs}, mean loss {mean:.4g}")
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
                p.grad = None
            student.train(was_training)
        method.init_done.fill_(True)
