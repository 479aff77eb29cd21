"""The one training loop, for every method and scheme, and the events it emits.

    summary = run(RunConfig(dataset="digits", methods="kd", n_train=300))

A run is recorded in the store from start to end: config, status, per-step and per-epoch
metrics, checkpoints and probes. Cancellation comes from a threading.Event or from the store
(another process); a non-finite loss ends the run as `failed` with the likely cause.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_checkpoint_into
from .config import CUSTOM_PREFIX, RunConfig, custom_model_factory
from .data import Dataset, get_dataset_spec, load_dataset
from .distributed import FollowerStore, setup as setup_distributed
from .kd.base import Batch
from .models import create_model
from .models.outputs import TapSpecs
from .schemes import RunContext, get_scheme
from .speed import NO_TIMER, StepTimer, auto_teacher_dtype, no_compile, prepare_student, prepare_teacher
from .store import Store

LOG_EVERY_S = 0.5          # how often step metrics are flushed (each flush syncs the device once)
CANCEL_POLL_S = 0.25       # how often the store is asked whether someone cancelled the run
DIVERGED_FACTOR = 1e4      # a loss this many times its first value has diverged, even while still finite


class RunCancelled(Exception):
    pass


class RunFailed(RuntimeError):
    """A run ended as failed; the message names the cause and a fix."""


@dataclass
class Event:
    kind: str                      # "start" | "step" | "epoch" | "end" | "log"
    run_id: str
    epoch: int = 0
    step: int = 0
    values: dict = field(default_factory=dict)
    message: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunFailed(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RunFailed("device 'mps' was asked for but MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def fill_defaults(config: RunConfig) -> RunConfig:
    """Resolve every None that has a dataset default, so the stored config reproduces the run."""
    spec = get_dataset_spec(config.dataset)
    r = spec.recipe
    if config.role == "teacher":
        config.methods = []   # a teacher learns from labels alone
    config.teacher = config.teacher or spec.default_teacher
    config.student = config.student or spec.default_student
    config.epochs = config.epochs or r["epochs"]
    config.teacher_epochs = config.teacher_epochs or r["teacher_epochs"]
    config.batch_size = config.batch_size or r["batch_size"]
    if config.lr is None:
        config.lr = r["lr"] if config.optimizer == "sgd" else 1e-3
    if config.probe_epochs is None:
        config.probe_epochs = sorted({0, config.epochs // 4, config.epochs // 2, config.epochs})
    if config.data_root is None and spec.default_root:
        config.data_root = spec.default_root
    if config.teacher_dtype == "auto":   # stored resolved, so the run says what it did
        config.teacher_dtype = auto_teacher_dtype(config)
    return config.validate()


def teacher_config(config: RunConfig, arch: str | None = None) -> RunConfig:
    """The recipe a teacher is trained with: a run of its own, reused whenever it matches.

    Only the data and the teacher's epochs come from the student's config; the optimisation is the
    dataset's recipe, so students tried with other learning rates or batch sizes share one teacher."""
    tcfg = RunConfig(
        name=None, role="teacher", dataset=config.dataset, data_root=config.data_root, image_size=config.image_size,
        augment=config.augment, student=arch or config.teacher, teacher=None, methods=[], scheme="offline",
        epochs=config.teacher_epochs, teacher_epochs=config.teacher_epochs, seed=0, device=config.device,
        amp=config.amp, probe_epochs=[], probe_size=0)
    tcfg.allow_custom_code = config.allow_custom_code   # a custom teacher is the same trusted user's code
    return tcfg


def recipe_hash(config: RunConfig) -> str:
    keys = ("dataset", "data_root", "image_size", "augment", "student", "epochs", "batch_size", "optimizer", "lr",
            "momentum", "weight_decay", "schedule", "seed")
    blob = json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Trainer:
    def __init__(self, config: RunConfig, store: Store | None = None,
                 on_event: Callable[[Event], None] | None = None, cancel: threading.Event | None = None):
        self.config = fill_defaults(config)
        self.dist = setup_distributed(self.config.device)   # None unless started by torchrun: distributed.py
        self.main = self.dist is None or self.dist.is_main   # the one process that records the run
        if self.dist is not None:
            self.dist.check_batch_size(self.config.batch_size)
        self.store = (store or Store()) if self.main else FollowerStore(self.dist.rank)
        self.on_event = (on_event or (lambda e: None)) if self.main else (lambda e: None)
        self.cancel = cancel
        self._last_poll = 0.0
        self._first_loss = None

    # ------------------------------------------------------------------ public
    def run(self, run_id: str | None = None, resume: bool = False) -> dict:
        cfg = self.config
        if run_id is None:
            run_id = self.store.create_run(cfg.to_dict(), status="queued",
                                           recipe_hash=recipe_hash(cfg) if cfg.role == "teacher" else None)
        self.run_id = run_id
        self.run_dir = Path(self.store.get_run(run_id)["run_dir"])
        t0 = time.time()
        try:
            self.store.set_status(run_id, "running", message="", worker_pid=os.getpid())
            summary = self._run(resume)
        except RunCancelled:
            self.store.set_status(run_id, "cancelled", message="cancelled by the user")
            self._emit("end", values={"status": "cancelled"})
            return self._result("cancelled", t0)
        except KeyboardInterrupt:
            self.store.set_status(run_id, "interrupted", message="interrupted (Ctrl-C); resume with `kd-explorer resume`")
            raise
        except Exception as e:  # any failure is recorded with a readable message, then surfaced
            msg = explain(e)
            self.store.set_status(run_id, "failed", message=msg)
            self._emit("end", values={"status": "failed"}, message=msg)
            raise RunFailed(msg) from e
        summary["seconds"] = round(time.time() - t0, 3)
        self.store.set_status(run_id, "completed", message="", summary=summary)
        self._emit("end", values={"status": "completed", **summary})
        return {"run_id": run_id, "status": "completed", **summary}

    # ------------------------------------------------------------------ internals
    def _result(self, status, t0):
        return {"run_id": self.run_id, "status": status, "seconds": round(time.time() - t0, 3)}

    def _emit(self, kind, epoch=0, step=0, values=None, message=""):
        self.on_event(Event(kind, self.run_id, epoch, step, values or {}, message))

    def _check_cancel(self, force=False):
        if self.dist is not None:   # every rank must stop at the same step: decided together, at epoch ends
            wanted = self.main and ((self.cancel is not None and self.cancel.is_set()) or
                                    self.store.cancel_requested(self.run_id))
            if force and self.dist.any(wanted):
                raise RunCancelled()
            return
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelled()
        now = time.monotonic()
        if force or now - self._last_poll > CANCEL_POLL_S:
            self._last_poll = now
            if self.store.cancel_requested(self.run_id):
                raise RunCancelled()

    def _run(self, resume: bool) -> dict:
        cfg = self.config
        device = self.dist.device if self.dist is not None else resolve_device(cfg.device)
        self.store.update_run(self.run_id, device=str(device))
        torch.manual_seed(cfg.seed)
        data = load_dataset(cfg.dataset, cfg.data_root, cfg.n_train, device, cfg.image_size)
        self.data = data
        c, h, w = data.shape

        def make_model(arch: str) -> nn.Module:
            build = custom_model_factory(arch) if arch.startswith(CUSTOM_PREFIX) else partial(create_model, arch)
            return build(num_classes=data.num_classes, in_channels=c, image_size=h).to(device)

        self._make_model = make_model
        scheme_cls = get_scheme(cfg.scheme)
        teacher = None
        teacher_acc = None
        if scheme_cls.needs_teacher and cfg.role == "distill":
            teacher = prepare_teacher(self._resolve_teacher(make_model, cfg.teacher), cfg)
            teacher_acc = evaluate(teacher, data, "test", cfg.batch_size * 4) if self.main else None
        torch.manual_seed(cfg.seed)   # the student's init must not depend on whether a teacher was trained
        student = prepare_student(make_model(cfg.student), cfg)
        steps = data.steps_per_epoch(cfg.batch_size, drop_last=self.dist is not None)
        ctx = RunContext(cfg, data, device, student, teacher, make_model, steps, cfg.epochs,
                         load_teacher=lambda arch: self._resolve_teacher(make_model, arch))
        scheme = get_scheme(cfg.scheme)(ctx, **cfg.scheme_params).to(device)
        params = [p for p in scheme.parameters() if p.requires_grad]
        opt = make_optimizer(cfg, params, device)
        sched = make_schedule(cfg, opt, steps)
        gen = torch.Generator().manual_seed(cfg.seed)
        amp_dtype = amp_dtype_for(device) if cfg.amp else None
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

        start_epoch = 0
        ckpt_path = self.run_dir / "checkpoint.pt"
        state = None
        if resume and ckpt_path.exists():
            state = torch.load(ckpt_path, map_location=device if self.dist is None else "cpu", weights_only=True)
        if resume and self.dist is not None:   # rank 0's checkpoint, for every rank (it may be on another machine)
            state = self.dist.from_main(state)
        if state is not None:
            scheme.load_state_dict(state["scheme"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["schedule"])
            gen.set_state(state["generator"])
            if "torch_rng" in state:   # anything drawing from the global RNG (dropout, sampling) continues too
                torch.set_rng_state(state["torch_rng"].cpu())
                if torch.cuda.is_available() and state.get("cuda_rng"):
                    torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
            start_epoch = state["epoch"] + 1
            self.store.delete_metrics_after(self.run_id, state["epoch"])
        elif resume:   # killed before its first checkpoint: start over, dropping the partial epoch's metrics
            self.store.delete_metrics_after(self.run_id, -1)
        self._emit("start", values={"teacher_acc": teacher_acc, "device": str(device), "epochs": cfg.epochs,
                                    "steps_per_epoch": steps, "n_train": len(data.train), "student": cfg.student,
                                    "teacher": cfg.teacher if teacher is not None else None})
        if self.main and 0 in cfg.probe_epochs and start_epoch == 0 and cfg.probe_size:
            self._probe(scheme, teacher, 0)
        stepper = scheme if self.dist is None else self.dist.wrap(scheme)   # DDP: gradients averaged over ranks

        step = start_epoch * steps
        total_steps = cfg.epochs * steps
        for epoch in range(start_epoch, cfg.epochs):
            scheme.train()
            t_epoch = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            correct = torch.zeros((), device=device)
            seen = 0
            win_sums: dict[str, torch.Tensor] = {}
            win_seen, t_win = 0, time.perf_counter()
            batches = train_batches(data, cfg, gen, epoch, step, total_steps, drop_last=self.dist is not None)
            for batch in (batches if self.dist is None else self.dist.shard(batches)):   # this rank's share
                self._check_cancel()
                y = batch.y
                logits, loss, losses = training_step(stepper, batch, opt, sched, amp_dtype, scaler)
                if self._first_loss is None:   # one sync per run: the reference for spotting divergence
                    self._first_loss = loss.detach().float().item()
                step += 1
                with torch.no_grad():
                    for k, v in (("loss", loss), *losses.items()):
                        v = v.detach().float() * len(y)
                        sums[k] = sums[k] + v if k in sums else v
                        win_sums[k] = win_sums[k] + v if k in win_sums else v
                    # batch.y: a data-free scheme trains on its own images and sets their targets there
                    correct += (logits.argmax(1) == batch.y).sum()
                seen += len(y)
                win_seen += len(y)
                if time.perf_counter() - t_win > LOG_EVERY_S:
                    values = {k: v.item() / win_seen for k, v in win_sums.items()}   # the one sync per window
                    self._check_finite(values, epoch, step)
                    values["lr"] = opt.param_groups[0]["lr"]
                    values["images_per_s"] = win_seen / (time.perf_counter() - t_win)
                    self.store.log_metrics(self.run_id, "step", epoch, step, values)
                    self._emit("step", epoch, step, values | {"progress": step / total_steps})
                    win_sums, win_seen, t_win = {}, 0, time.perf_counter()
            if self.dist is not None:   # the epoch's metrics over every rank's share
                sums, correct, seen = self.dist.sum_epoch(sums, correct, seen)
            train_values = {f"train/{k}": v.item() / seen for k, v in sums.items()}
            self._check_finite({k[6:]: v for k, v in train_values.items()}, epoch, step)
            seconds = time.perf_counter() - t_epoch
            values = train_values | {"train/acc": correct.item() / seen, "lr": opt.param_groups[0]["lr"],
                                     "images_per_s": seen / seconds, "epoch_seconds": seconds}
            scheme.on_epoch_end(epoch)
            for name, model in scheme.eval_models().items():
                values[f"val/acc/{name}"] = evaluate(model, data, "val", cfg.batch_size * 4)
            values["val/acc"] = values[f"val/acc/{next(iter(scheme.eval_models()))}"]
            self.store.log_metrics(self.run_id, "epoch", epoch + 1, step, values)
            self._emit("epoch", epoch + 1, step, values)
            if self.main and epoch + 1 in cfg.probe_epochs and cfg.probe_size:
                self._probe(scheme, teacher, epoch + 1)
            if self.main and cfg.checkpoint_every and ((epoch + 1) % cfg.checkpoint_every == 0
                                                       or epoch + 1 == cfg.epochs):
                self._save_checkpoint(ckpt_path, scheme, opt, sched, gen, epoch)
            self._check_cancel(force=True)

        models = scheme.eval_models()
        summary = {f"test_acc/{n}": evaluate(m, data, "test", cfg.batch_size * 4) for n, m in models.items()}
        summary["test_acc"] = summary[f"test_acc/{next(iter(models))}"]
        summary["teacher_acc"] = teacher_acc
        summary["val_acc"] = values["val/acc"] if cfg.epochs > start_epoch else None
        summary["n_train"] = len(data.train)
        summary["epochs"] = cfg.epochs
        if teacher is not None:
            summary["teacher_run"] = getattr(teacher, "kd_source", None)
        cache = getattr(scheme, "teacher_cache", None)
        summary["teacher_cache"] = cache is not None   # honest flag: teacher logits were reused
        if cache is not None:
            summary["teacher_cache_hit_rate"] = round(cache.hit_rate, 4)
        if not self.main:
            return summary   # rank 0 saves and records the run
        final = self.run_dir / "model.pt"
        torch.save({n: m.state_dict() for n, m in models.items()}, final)
        self.store.add_artifact(self.run_id, "model", final, "state_dict")
        scheme.save_artifacts(self.run_dir, self.store, self.run_id)
        self.store.log_metrics(self.run_id, "final", cfg.epochs, step,
                               {k: v for k, v in summary.items() if isinstance(v, float)})
        return summary

    def _check_finite(self, values: dict, epoch: int, step: int):
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        first = self._first_loss if self._first_loss is not None and math.isfinite(self._first_loss) else 1.0
        exploded = abs(values.get("loss", 0.0)) > DIVERGED_FACTOR * max(abs(first), 1.0)
        if bad or exploded:
            cfg = self.config
            terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            what = "became non-finite" if bad else f"diverged (over {DIVERGED_FACTOR:g}x its first value {first:.4g})"
            raise RunFailed(
                f"the loss {what} at epoch {epoch + 1}, step {step} ({terms}). Likely cause: the "
                f"learning rate is too high (lr={cfg.lr}) or a distillation weight is too large "
                f"({', '.join(f'{m.key}={m.weight}' for m in cfg.methods) or 'no methods'}). "
                f"Fix: lower --lr (the {cfg.dataset} recipe uses {get_dataset_spec(cfg.dataset).recipe['lr']}) "
                "or the method weights, or turn off AMP.")

    def _save_checkpoint(self, path: Path, scheme, opt, sched, gen, epoch: int):
        state = {"scheme": scheme.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                 "generator": gen.get_state(), "epoch": epoch, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        tmp = path.with_suffix(".tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)     # atomic: a crash mid-save never leaves a torn checkpoint
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RunFailed(f"could not save the checkpoint to {path}: {e.strerror or e}. "
                            "Free disk space or set KD_EXPLORER_HOME to a folder on a larger disk.") from e
        self.store.add_artifact(self.run_id, "checkpoint", path, "checkpoint")

    @no_compile   # probes hook into modules, which would make compiled models recompile
    def _probe(self, scheme, teacher, epoch: int):
        """Save a fixed test batch's logits and taps, so every analysis view works at this epoch."""
        from .analysis.probes import capture_probe, save_probe
        cfg, data = self.config, self.data
        n = min(cfg.probe_size, len(data.test))
        x, y = data.normalize(data.test.x[:n]), data.test.y[:n]
        reference, ref_stages = teacher, cfg.teacher_stages
        if reference is None:   # a teacher-less scheme may name what to compare with (a DML peer) ...
            reference, ref_stages = scheme.probe_reference(), None
        if reference is None:   # ... or (self-KD) the dataset's teacher where one already exists, as a yardstick
            if not hasattr(self, "_reference"):
                self._reference = self._resolve_teacher(self._make_model, cfg.teacher, reference_only=True)
            reference, ref_stages = self._reference, cfg.teacher_stages
        if reference is None:   # nothing to compare with: a probe needs both sides, so none is saved
            return
        captured = {}
        for role, model, stages in (("student", next(iter(scheme.eval_models().values())), cfg.student_stages),
                                    ("teacher", reference, ref_stages)):
            if model is not None:
                specs = TapSpecs.of(model, stages)
                # a model outside the zoo may not name an embedding: its deepest stage, flattened, stands in
                captured[role] = capture_probe(model, x, list(specs.stages), specs.embedding or specs.stages[-1])
        path = self.run_dir / f"probe_epoch{epoch:03d}.pt"
        save_probe(path, epoch, x.cpu(), y.cpu(), torch.arange(n), captured.get("student"), captured.get("teacher"))
        self.store.add_artifact(self.run_id, f"probe_epoch{epoch:03d}", path, "probe")

    def _resolve_teacher(self, make_model, arch: str, reference_only: bool = False) -> nn.Module | None:
        """A frozen teacher: from --teacher-ckpt, a bundled file, a finished teacher run, or trained now.
        reference_only: one that already exists, else None (never trained; not recorded as the run's teacher)."""
        cfg = self.config
        model = make_model(arch)
        # Under torchrun only rank 0 loads weights; Dist.wrap broadcasts them (the teacher is in the scheme).
        if cfg.teacher_ckpt and arch == cfg.teacher:
            if self.main:
                load_checkpoint_into(model, cfg.teacher_ckpt)
            model.kd_source = f"file:{cfg.teacher_ckpt}"
        else:
            tcfg = teacher_config(cfg, arch)
            tcfg = fill_defaults(tcfg)
            rhash = recipe_hash(tcfg)
            found = self.store.find_completed(rhash)
            if self.dist is not None:   # rank 0's store decides for every rank whether to train one
                found = self.dist.from_main(found)
            bundled = bundled_teacher(rhash)
            if found is not None:
                if self.main:
                    load_checkpoint_into(model, self.store.artifacts(found["id"])["model"], "student")
                model.kd_source = found["id"]
            elif bundled is not None:
                load_checkpoint_into(model, bundled, "student")
                model.kd_source = f"bundled:{bundled.name}"
                self._emit("log", message=f"teacher {arch}: the bundled data/teachers/{bundled.name} (no training)")
            elif reference_only:
                return None
            else:
                self._emit("log", message=f"training teacher {arch} on {cfg.dataset} ({tcfg.epochs} epochs) -- "
                                          "once; later runs reuse it")
                parent = self.run_id
                sub = Trainer(tcfg, self.store, on_event=lambda e: self.on_event(
                    Event(e.kind if e.kind == "log" else "teacher_" + e.kind, parent, e.epoch, e.step, e.values,
                          e.message)), cancel=self.cancel)
                sub._last_poll = 0.0
                result = sub.run()   # every rank takes part; rank 0 records it
                if self.main:
                    load_checkpoint_into(model, self.store.artifacts(result["run_id"])["model"], "student")
                model.kd_source = result["run_id"]
            if not reference_only:
                self.store.update_run(self.run_id, teacher_run=model.kd_source)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def bundled_teacher(rhash: str) -> Path | None:
    """Teachers shipped in data/teachers/, named by their recipe hash (see scripts/train_default_teachers.py)."""
    path = Path(__file__).resolve().parents[1] / "data" / "teachers" / f"{rhash}.pt"
    return path if path.is_file() else None


def amp_dtype_for(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


def make_optimizer(cfg: RunConfig, params, device: torch.device):
    fused = device.type == "cuda"
    # elsewhere, foreach: one kernel per op over all parameters (bitwise the same as the per-parameter loop)
    kernels = dict(fused=True) if fused else dict(foreach=True)
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


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "test", batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    correct = torch.zeros((), device=data.device)
    n = 0
    for x, y, _ in data.batches(split, batch_size):
        correct += (model(x).argmax(1) == y).sum()
        n += len(y)
    model.train(was)
    return correct.item() / max(n, 1)


def explain(e: BaseException) -> str:
    """A message a user can act on, for the failures we can name."""
    if isinstance(e, (RunFailed,)):
        return str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (f"the disk is full ({e}). Fix: free disk space, or set KD_EXPLORER_HOME to a folder on a "
                "larger disk and resume the run.")
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return (f"the device ran out of memory ({str(e).splitlines()[0][:200]}). Fix: lower --batch-size, "
                "pick a smaller model, or use --device cpu.")
    if isinstance(e, FileNotFoundError):
        return f"a file or folder is missing: {e}"
    if isinstance(e, (ValueError, KeyError)):
        return f"{type(e).__name__}: {e}"
    return f"{type(e).__name__}: {e}"


def run(config: RunConfig | dict | None = None, store: Store | None = None, on_event=None,
        cancel: threading.Event | None = None, **overrides) -> dict:
    """Train one run from Python (a notebook): returns the summary dict with its run_id."""
    if config is None:
        config = RunConfig()
    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    if overrides:
        config = RunConfig.from_dict(config.to_dict() | overrides)
    return Trainer(config, store, on_event, cancel).run()
