"""The one training loop, for every method and scheme: epochs of steps, the metrics window, evaluation,
the divergence check, cancel polls, probes and checkpoints.

The host syncs with the device once per logging window and once per epoch, never per step.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset, get_dataset_spec
from ..dot import DistillationOrientedTrainer, split_losses
from ..errors import RunFailed
from ..kd.base import Batch
from ..speed import NO_TIMER, StepTimer
from . import checkpoint, probe

if TYPE_CHECKING:
    from .run import Trainer
    from .setup import RunState

LOG_EVERY_S = 0.5          # how often step metrics are flushed (each flush syncs the device once)
DIVERGED_FACTOR = 1e4      # a loss this many times its first value has diverged, even while still finite


def fit(trainer: Trainer, state: RunState) -> dict:
    """Train from state.start_epoch to the end; returns the last epoch's values ({} when none ran)."""
    cfg, data, dist, store = state.cfg, state.data, trainer.dist, trainer.store
    first_loss = None   # the reference for spotting divergence: one sync per run
    values = {}
    for epoch in range(state.start_epoch, cfg.epochs):
        state.scheme.train()
        t_epoch = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=state.device)
        seen = 0
        win_sums: dict[str, torch.Tensor] = {}
        win_seen, t_win = 0, time.perf_counter()
        batches = train_batches(data, cfg, state.gen, epoch, state.step, state.total_steps, drop_last=dist is not None)
        for batch in (batches if dist is None else dist.shard(batches)):   # this rank's share
            trainer.check_cancel()
            logits, loss, losses = training_step(state.stepper, batch, state.opt, state.sched, state.amp_dtype,
                                                 state.scaler)
            if first_loss is None:
                first_loss = loss.detach().float().item()
            state.step += 1
            n = len(batch.y)
            with torch.no_grad():
                for k, v in (("loss", loss), *losses.items()):
                    v = v.detach().float() * n
                    sums[k] = sums[k] + v if k in sums else v
                    win_sums[k] = win_sums[k] + v if k in win_sums else v
                # batch.y: a data-free scheme trains on its own images and sets their targets there
                correct += (logits.argmax(1) == batch.y).sum()
            seen += n
            win_seen += n
            if time.perf_counter() - t_win > LOG_EVERY_S:
                window = {k: v.item() / win_seen for k, v in win_sums.items()}   # the one sync per window
                check_finite(window, first_loss, cfg, epoch, state.step)
                window["lr"] = state.opt.param_groups[0]["lr"]
                window["images_per_s"] = win_seen / (time.perf_counter() - t_win)
                store.log_metrics(trainer.run_id, "step", epoch, state.step, window)
                trainer.emit("step", epoch, state.step, window | {"progress": state.step / state.total_steps})
                win_sums, win_seen, t_win = {}, 0, time.perf_counter()
        if dist is not None:   # the epoch's metrics over every rank's share
            sums, correct, seen = dist.sum_epoch(sums, correct, seen)
        train_values = {f"train/{k}": v.item() / seen for k, v in sums.items()}
        check_finite({k[6:]: v for k, v in train_values.items()}, first_loss, cfg, epoch, state.step)
        seconds = time.perf_counter() - t_epoch
        values = train_values | {"train/acc": correct.item() / seen, "lr": state.opt.param_groups[0]["lr"],
                                 "images_per_s": seen / seconds, "epoch_seconds": seconds}
        state.scheme.on_epoch_end(epoch)
        values |= state.scheme.epoch_metrics()   # e.g. the multi-teacher weights over the epoch
        models = state.scheme.eval_models()
        for name, model in models.items():
            if data.modality == "text":   # token accuracy, perplexity and the teacher's agreement
                for k, v in evaluate_lm(model, data, "val", cfg.batch_size * 4, trainer.check_cancel,
                                        state.teacher).items():
                    values[f"val/{k}/{name}"] = v
            else:
                values[f"val/acc/{name}"] = evaluate(model, data, "val", cfg.batch_size * 4, trainer.check_cancel)
        first = next(iter(models))
        values["val/acc"] = values[f"val/acc/{first}"]
        for k in ("ppl", "agree"):
            if f"val/{k}/{first}" in values:
                values[f"val/{k}"] = values[f"val/{k}/{first}"]
        store.log_metrics(trainer.run_id, "epoch", epoch + 1, state.step, values)
        trainer.emit("epoch", epoch + 1, state.step, values)
        if trainer.main:
            probe.maybe_capture(trainer, state, epoch + 1)
            if cfg.checkpoint_every and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
                checkpoint.save(trainer, state, epoch)
        trainer.check_cancel(force=True)
    return values


def check_finite(values: dict, first_loss: float | None, cfg: RunConfig, epoch: int, step: int) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    first = first_loss if first_loss is not None and math.isfinite(first_loss) else 1.0
    exploded = abs(values.get("loss", 0.0)) > DIVERGED_FACTOR * max(abs(first), 1.0)
    if bad or exploded:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        what = "became non-finite" if bad else f"diverged (over {DIVERGED_FACTOR:g}x its first value {first:.4g})"
        raise RunFailed(
            f"the loss {what} at epoch {epoch + 1}, step {step} ({terms}). Likely cause: the "
            f"learning rate is too high (lr={cfg.lr}) or a distillation weight is too large "
            f"({', '.join(f'{m.key}={m.weight}' for m in cfg.methods) or 'no methods'}). "
            f"Fix: lower --lr (the {cfg.dataset} recipe uses {get_dataset_spec(cfg.dataset).recipe['lr']}) "
            "or the method weights, or turn off AMP.")


def train_batches(data: Dataset, cfg: RunConfig, gen: torch.Generator, epoch: int, step: int, total_steps: int,
                  drop_last: bool = False):
    """One epoch of shuffled, augmented training batches as the scheme sees them (the trainer's and the bench's)."""
    for x, y, idx, views in data.batches("train", cfg.batch_size, shuffle=True, augment=cfg.augment,
                                         generator=gen, with_views=True, drop_last=drop_last):
        yield Batch(x, y, idx, epoch, step, step / total_steps, views)
        step += 1


def training_step(scheme, batch: Batch, opt, sched, amp_dtype, scaler, timer: StepTimer = NO_TIMER):
    """One optimisation step: the scheme's forward and loss, backward, the optimiser and schedule.
    Shared by the trainer and `bench throughput` (which times the sections); it never syncs the host."""
    with timer("forward"), torch.autocast(batch.x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits, losses = scheme.train_step(batch)
        loss = sum(losses.values())
    if isinstance(opt, DistillationOrientedTrainer):   # two backward passes: each loss has its own momentum
        if scaler is not None:
            raise RunFailed("the DOT optimiser does not run with float16 mixed precision (its two gradients "
                            "would need two loss scales); turn AMP off or use a bf16 GPU")
        task, kd = split_losses(losses)
        with timer("backward"):
            opt.zero_grad(set_to_none=True)
            kd.backward(retain_graph=True)
            opt.step_kd()
            opt.zero_grad(set_to_none=True)
            task.backward()
        with timer("optimizer"):
            opt.step()
            sched.step()
        return logits, loss, losses
    with timer("backward"):
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
    with timer("optimizer"):
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
    return logits, loss, losses


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "test", batch_size: int = 512,
             check_cancel=None) -> float:
    """Accuracy on a split; check_cancel (a run's) is called before each batch."""
    if data.modality == "text" and _frozen(model):   # the frozen teacher's top-1 tokens, computed once per split
        top = frozen_top1(model, data, split, batch_size, check_cancel)
        return (top == data.split(split).y.reshape(-1)).double().mean().item() if len(top) else 0.0
    was = model.training
    model.eval()
    correct = torch.zeros((), device=data.device)
    n = 0
    for x, y, _ in data.batches(split, batch_size):
        if check_cancel is not None:
            check_cancel()
        correct += (model(x).argmax(1) == y).sum()
        n += len(y)
    model.train(was)
    return correct.item() / max(n, 1)


def _frozen(model: nn.Module) -> bool:
    return not any(p.requires_grad for p in model.parameters())


@torch.no_grad()
def frozen_top1(model: nn.Module, data: Dataset, split: str, batch_size: int = 256, check_cancel=None) -> torch.Tensor:
    """A frozen model's top-1 token at every position of a text split, (N*T,): computed once per run (kept on the
    Dataset, which lives as long as the run), so the teacher is not re-read at every epoch's agreement."""
    cache = data.__dict__.setdefault("_frozen_top1", {})
    key = (id(model), split)
    if key not in cache:
        was = model.training
        model.eval()
        tops = []
        for x, _, _ in data.batches(split, batch_size):
            if check_cancel is not None:
                check_cancel()
            tops.append(model(x).argmax(1))
        model.train(was)
        cache[key] = torch.cat(tops) if tops else torch.zeros(0, dtype=torch.long, device=data.device)
    return cache[key]


@torch.no_grad()
def evaluate_lm(model: nn.Module, data: Dataset, split: str = "val", batch_size: int = 256, check_cancel=None,
                reference: nn.Module | None = None) -> dict[str, float]:
    """A language model on a text split: token accuracy "acc", perplexity "ppl" = exp(mean token cross-entropy)
    and, given a reference (the teacher), "agree" = the fraction of positions where its top-1 token is the
    model's top-1 token."""
    ref_tops = (frozen_top1(reference, data, split, batch_size, check_cancel)
                if reference is not None and _frozen(reference) else None)
    models = [m for m in (model, reference) if m is not None]
    was = [m.training for m in models]
    for m in models:
        m.eval()
    correct, nll, agree = (torch.zeros((), device=data.device, dtype=torch.float64) for _ in range(3))
    n = 0
    for x, y, _ in data.batches(split, batch_size):
        if check_cancel is not None:
            check_cancel()
        logits = model(x).float()
        top = logits.argmax(1)
        correct += (top == y).sum()
        nll += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
        if reference is not None:
            ref_top = ref_tops[n:n + len(y)] if ref_tops is not None else reference(x).argmax(1)
            agree += (ref_top == top).sum()
        n += len(y)
    for m, w in zip(models, was):
        m.train(w)
    n = max(n, 1)
    out = {"acc": correct.item() / n, "ppl": math.exp(min(nll.item() / n, 700.0))}
    if reference is not None:
        out["agree"] = agree.item() / n
    return out


@torch.no_grad()
def test_logits(models: dict[str, nn.Module], data: Dataset, batch_size: int = 512) -> dict:
    """Every given model's logits on the whole test split (float16, on the CPU) with the labels: what the app's
    calibration, confusion and per-class figures are computed on (not the 64 probe samples)."""
    out: dict = {"y": [], **{n: [] for n in models}}
    was = {n: m.training for n, m in models.items()}
    for m in models.values():
        m.eval()
    for x, y, _ in data.batches("test", batch_size):
        out["y"].append(y.cpu())
        for n, m in models.items():
            out[n].append(m(x).float().cpu().half())
    for n, m in models.items():
        m.train(was[n])
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}
