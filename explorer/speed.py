"""Speed options of the training loop (config fields channels_last, teacher_dtype, compile, teacher_cache)
and the step timer `kd-explorer bench throughput` reads. docs/performance.md has the measurements behind each.

Each option keeps the run's meaning: the student trains in float32 on the same batches; what changes
is memory layout, the frozen teacher's arithmetic (bf16: soft targets rounded to ~3 digits), or whether
the teacher is run again on an input it has already seen.
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch import nn

from .device import fast_bf16, resolve_device
from .errors import RunFailed
from .kd import get_method

# A dense cache is one float32 row per (training sample, augmented view); above this it is refused
# (CIFAR-100: 45,000 training images x 162 pad-crop x flip views x 100 classes = 2.7 GiB).
CACHE_MAX_BYTES = 1 << 30


def auto_teacher_dtype(cfg) -> str:
    """teacher_dtype "auto": bf16 where it is native and only the teacher's logits are read (offline KD
    with response methods), float32 elsewhere."""
    try:
        device = resolve_device(cfg.device)
    except RunFailed:   # the run itself will report the device; nothing to speed up
        return "float32"
    ok = cfg.role == "distill" and cfg.scheme == "offline" and cfg.methods and response_only(cfg.methods)
    return "bfloat16" if ok and fast_bf16(device) else "float32"


def prepare_student(model: nn.Module, cfg) -> nn.Module:
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile(dynamic=True)   # in place: state_dict keys stay; dynamic: the last short batch reuses it
    return model


def prepare_teacher(model: nn.Module, cfg) -> nn.Module:
    """The frozen teacher's speed options. bf16: weights and activations in bf16, the input cast on the
    way in and the logits cast back to float32 on the way out, so every method sees float32."""
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.teacher_dtype == "bfloat16":
        model.to(torch.bfloat16)
        model.register_forward_pre_hook(lambda m, args: (args[0].to(torch.bfloat16), *args[1:]))
        model.register_forward_hook(lambda m, args, out: out.float())
    if cfg.compile:
        model.compile(dynamic=True)
    return model


def response_only(methods) -> bool:
    """Whether every knowledge term reads only the teacher's logits (what the cache and bf16 teacher support)."""
    return all(get_method(t.key).needs <= {"logits"} for t in methods)


class TeacherCache:
    """A frozen teacher's logits per (training sample, augmented view), computed once and reused.

    Views are finite (pad-crop offsets x flip, see data.draw_views), so the same input recurs: every
    epoch with augmentation off, and ever more often with it on. Entries are exactly what the teacher
    returned (bitwise); only rows not yet cached are sent through the teacher.
    """

    def __init__(self, n_samples: int, n_views: int, num_classes: int, device: torch.device):
        need = n_samples * n_views * num_classes * 4
        if need > CACHE_MAX_BYTES:
            raise ValueError(
                f"teacher_cache would need {need / 2**30:.1f} GiB ({n_samples} samples x {n_views} augmented views x "
                f"{num_classes} classes); turn augmentation off (more hits, less memory) or turn teacher_cache off")
        self.n_views = n_views
        self.logits_ = torch.zeros(n_samples * n_views, num_classes, device=device)
        self.filled = torch.zeros(n_samples * n_views, dtype=torch.bool, device=device)
        self.hits = 0
        self.lookups = 0

    @classmethod
    def for_run(cls, ctx) -> "TeacherCache":
        from .data import n_views
        data, cfg = ctx.dataset, ctx.config
        views = n_views(data.spec.pad, data.spec.augment) if cfg.augment else 1
        return cls(len(data.train), views, data.num_classes, ctx.device)

    @torch.no_grad()
    def logits(self, teacher: nn.Module, batch) -> torch.Tensor:
        if self.n_views > 1 and batch.view is None:
            raise RuntimeError("teacher_cache: an augmented batch came without its view ids (Batch.view); "
                               "build batches with Dataset.batches(..., with_views=True)")
        keys = batch.index * self.n_views + (batch.view if batch.view is not None else 0)
        miss = (~self.filled[keys]).nonzero().flatten()   # the one host sync the cache costs per step
        if len(miss):
            self.logits_[keys[miss]] = teacher(batch.x[miss]).float()
            self.filled[keys[miss]] = True
        self.lookups += len(keys)
        self.hits += len(keys) - len(miss)
        return self.logits_[keys]

    @property
    def hit_rate(self) -> float:
        return self.hits / max(self.lookups, 1)


class StepTimer:
    """Wall time per named section of the training step, summed. Off in the trainer (a no-op); on in
    `bench throughput`. On CUDA every boundary synchronises the device, which is why it is off in runs."""

    def __init__(self, device: torch.device | None = None, enabled: bool = True):
        self.enabled = enabled
        self.sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
        self.totals: dict[str, float] = defaultdict(float)
        self._open: dict[str, float] = {}

    def start(self, name: str):
        if self.enabled:
            self.sync()
            self._open[name] = time.perf_counter()

    def stop(self, name: str):
        if self.enabled:
            self.sync()
            self.totals[name] += time.perf_counter() - self._open.pop(name)

    def __call__(self, name: str):
        return _Section(self, name)

    def reset(self):
        self.totals.clear()


class _Section:
    def __init__(self, timer: StepTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.timer.start(self.name)

    def __exit__(self, *exc):
        self.timer.stop(self.name)


NO_TIMER = StepTimer(enabled=False)


def no_compile(fn):
    """Run `fn` eagerly even where models are compiled (torch >= 2.6; older torch runs it as it is)."""
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager")(fn) if stance is not None else fn
