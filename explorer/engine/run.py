"""A run's life: queued -> running -> completed | failed | cancelled | interrupted, recorded in the
store from start to end, and the events it emits on the way.

    summary = run(RunConfig(dataset="digits", methods="kd", n_train=300))

Cancellation comes from a threading.Event or from the store (another process); a failure ends the
run as `failed` with a message naming the likely cause (errors.explain).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import RunConfig
from .. import owners, teachers
from ..distributed import FollowerStore, lost_peer, setup as setup_distributed, signals_deferred
from ..errors import RunCancelled, RunFailed, RunInterrupted, StoreError, explain
from ..kd.base import Method
from ..recipes import recipe_hash, resolve, teacher_recipe
from ..store import Store
from ..teachers import TeacherRef
from . import checkpoint, loop, probe, setup
from .loop import evaluate, evaluate_lm
from .setup import RunState

CANCEL_POLL_S = 0.25       # how often the store is asked whether someone cancelled the run


@dataclass
class Event:
    kind: str                      # "start" | "step" | "epoch" | "end" | "log" | "phase"; a teacher's: "teacher_" + kind
    run_id: str
    epoch: int = 0
    step: int = 0
    values: dict = field(default_factory=dict)
    message: str = ""


class Trainer:
    def __init__(self, config: RunConfig | dict, store: Store | None = None,
                 on_event: Callable[[Event], None] | None = None, cancel: threading.Event | None = None):
        self.config = resolve(config)
        self.dist = setup_distributed(self.config.device)   # None unless started by torchrun: distributed.py
        self.main = self.dist is None or self.dist.is_main   # the one process that records the run
        if self.dist is not None:
            self.dist.check_batch_size(self.config.batch_size)
        self.store = (store or Store()) if self.main else FollowerStore(self.dist.rank)
        self.on_event = (on_event or (lambda e: None)) if self.main else (lambda e: None)
        self.cancel = cancel
        self.parent: Trainer | None = None   # the run this one trains a teacher for: its cancel stops this one too
        self._last_poll = 0.0

    def run(self, run_id: str | None = None, resume: bool = False) -> dict:
        """Train (or, resume: continue from its checkpoint) and record the run; returns its summary and run_id."""
        cfg = self.config
        if run_id is None:
            run_id = self.store.create_run(cfg.to_dict(), status="queued",
                                           recipe_hash=recipe_hash(cfg) if cfg.role == "teacher" else None)
        self.run_id = run_id
        self.run_dir = Path(self.store.get_run(run_id)["run_dir"])
        t0 = time.time()
        try:
            # this process owns the run: a reader finding it gone sees the run interrupted (owners.reap)
            self.store.set_status(run_id, "running", message="", **owners.fields())
            summary = self._train(resume)
        except RunCancelled:
            self.store.set_status(run_id, "cancelled", message="cancelled by the user")
            self.emit("end", values={"status": "cancelled"})
            return {"run_id": run_id, "status": "cancelled", "seconds": round(time.time() - t0, 3)}
        except KeyboardInterrupt as e:
            if self.dist is not None and str(e).startswith("signal"):   # torchrun stopping the survivors
                msg = (f"interrupted: a torchrun rank stopped (torchrun ended rank {self.dist.rank} with {e}); "
                       f"resume with `kd-explorer resume {run_id}`")
            else:
                msg = f"interrupted (Ctrl-C); resume with `kd-explorer resume {run_id}`"
            self.store.set_status(run_id, "interrupted", message=msg)
            raise
        except Exception as e:  # any failure is recorded with a readable message, then surfaced
            lost = lost_peer(e, self.dist) if self.dist is not None else None
            if lost is not None:   # another rank died: resumable, as docs/distributed.md says
                msg = (f"interrupted: a torchrun rank stopped ({lost}); resume with `kd-explorer resume {run_id}` "
                       f"(or `torchrun ... -m explorer resume {run_id}`)")
                with signals_deferred():   # torchrun's SIGTERM to the survivors must not cut the record short
                    self.store.set_status(run_id, "interrupted", message=msg)
                    self.emit("end", values={"status": "interrupted"}, message=msg)
                raise RunInterrupted(msg, reason=lost) from e
            msg = explain(e, self.run_dir)
            if self.main:   # a torn *.tmp (a full disk) goes; that also makes room for the record
                checkpoint.remove_temp_files(self.run_dir)
            try:
                self.store.set_status(run_id, "failed", message=msg)
            except StoreError as store_e:   # even the store's reserve was not enough to record it
                raise RunFailed(f"{msg} (the run store could not record this: {store_e})") from e
            self.emit("end", values={"status": "failed"}, message=msg)
            raise RunFailed(msg) from e
        summary["seconds"] = round(time.time() - t0, 3)
        self.store.set_status(run_id, "completed", message="", summary=summary)
        self.emit("end", values={"status": "completed", **summary})
        return {"run_id": run_id, "status": "completed", **summary}

    def emit(self, kind: str, epoch: int = 0, step: int = 0, values: dict | None = None, message: str = "") -> None:
        self.on_event(Event(kind, self.run_id, epoch, step, values or {}, message))

    def phase_progress(self, phase: str, done: int, total: int, epochs: int = 0, **values: float) -> None:
        """A scheme's own loop before or inside the student's training (an assistant's distillation, image
        synthesis) reports where it stands: stored as scope "phase" metrics named "<phase>/done", "/total",
        "/epochs" and "/<value>" (at most every LOG_EVERY_S, and always at its start and end), for the app's card."""
        now = time.monotonic()
        last = getattr(self, "_last_phase", None)
        if not self.main or (0 < done < total and last is not None and now - last < loop.LOG_EVERY_S):
            return
        self._last_phase = now
        values = {k: float(v) for k, v in values.items()}    # a tensor is read (a device sync) only here
        self.store.log_metrics(self.run_id, "phase", 0, int(done),
                               {f"{phase}/done": done, f"{phase}/total": total, f"{phase}/epochs": epochs}
                               | {f"{phase}/{k}": v for k, v in values.items()})
        self.emit("phase", step=int(done), values={"phase": phase, "done": done, "total": total} | values)

    def check_cancel(self, force: bool = False) -> None:
        """Raise RunCancelled if asked to stop; the store is polled every CANCEL_POLL_S (force: now)."""
        if self.dist is not None:   # every rank must stop at the same step: decided together, at epoch ends
            wanted = self.main and ((self.cancel is not None and self.cancel.is_set()) or self._cancel_in_store())
            if force and self.dist.any(wanted):
                raise RunCancelled()
            return
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelled()
        now = time.monotonic()
        if force or now - self._last_poll > CANCEL_POLL_S:
            self._last_poll = now
            if self._cancel_in_store():
                raise RunCancelled()

    def _cancel_in_store(self) -> bool:
        """Whether a cancel was asked for this run, or for the run it trains a teacher for (and so on up)."""
        t = self
        while t is not None:
            if self.store.cancel_requested(t.run_id):
                return True
            t = t.parent
        return False

    def train_teacher(self, arch: str) -> TeacherRef:
        """No teacher `arch` exists for this recipe: train one now, as a run of its own that later runs reuse.
        Its events reach this run's listener as teacher_* events."""
        tcfg = teacher_recipe(self.config, arch)
        self.emit("log", message=f"training teacher {arch} on {tcfg.dataset} ({tcfg.epochs} epochs) -- "
                                 "once; later runs reuse it")
        parent = self.run_id

        def relay(e: Event):
            self.on_event(Event(e.kind if e.kind == "log" else "teacher_" + e.kind, parent, e.epoch, e.step,
                                e.values, e.message))
        sub = Trainer(tcfg, self.store, on_event=relay, cancel=self.cancel)
        sub.parent = self   # a cancel of this run, from a thread or through the store, stops the teacher's too
        sub_id = self.store.create_run(tcfg.to_dict(), status="queued", recipe_hash=recipe_hash(tcfg))
        if self.main and (teachers.of_run(self.store.get_run(parent)) or TeacherRef("", "train")).source == "train":
            # the parent -> sub-run link, until the trained teacher is recorded: the app shows its progress
            teachers.record(self.store, parent, TeacherRef(arch, "train", run_id=sub_id, epochs=tcfg.epochs))
        result = sub.run(sub_id)
        if result["status"] == "cancelled":
            raise RunCancelled()
        return TeacherRef(arch, "run", run_id=result["run_id"], test_acc=result.get("test_acc"))

    def _train(self, resume: bool) -> dict:
        state = setup.build(self, resume)
        cfg = self.config
        self.emit("start", values={"teacher_acc": state.teacher_acc, "device": str(state.device), "epochs": cfg.epochs,
                                   "steps_per_epoch": state.steps_per_epoch, "n_train": len(state.data.train),
                                   "student": cfg.student, "teacher": cfg.teacher if state.teacher is not None else None})
        if self.main and state.start_epoch == 0:
            probe.maybe_capture(self, state, 0)
        values = loop.fit(self, state)
        return self._finish(state, values)

    def _finish(self, state: RunState, values: dict) -> dict:
        """Test every model, then save the final models and the summary's metrics (rank 0)."""
        cfg, scheme = self.config, state.scheme
        models = scheme.eval_models()
        summary = {f"test_acc/{n}": evaluate(m, state.data, "test", cfg.batch_size * 4) for n, m in models.items()}
        summary["test_acc"] = summary[f"test_acc/{next(iter(models))}"]
        if state.data.modality == "text":   # language models: perplexity, and agreement with the teacher
            lm = evaluate_lm(next(iter(models.values())), state.data, "test", cfg.batch_size * 4, None, state.teacher)
            summary["test_ppl"], summary["val_ppl"] = lm["ppl"], values.get("val/ppl")
            summary["test_agree"] = lm.get("agree")
        summary["teacher_acc"] = state.teacher_acc
        summary["val_acc"] = values.get("val/acc")   # None when resumed after its last epoch
        summary["n_train"] = len(state.data.train)
        summary["epochs"] = cfg.epochs
        ref = state.teacher_ref
        summary["teacher_run"] = ref.run_id if ref is not None and ref.source == "run" else None
        summary["teacher_source"] = ref.source if ref is not None else None
        summary["teacher_arch"] = ref.arch if ref is not None else None
        # which (student, teacher) stages each feature method distilled, for the app to label its figures
        summary["stage_pairs"] = {m.key: [[int(i), int(j)] for i, j in m.pairs]
                                  for m in scheme.modules() if isinstance(m, Method) and hasattr(m, "pairs")}
        cache = getattr(scheme, "teacher_cache", None)
        summary["teacher_cache"] = cache is not None   # honest flag: teacher logits were reused
        if cache is not None:
            summary["teacher_cache_hit_rate"] = round(cache.hit_rate, 4)
        if not self.main:
            return summary   # rank 0 saves and records the run
        final = self.run_dir / "model.pt"
        checkpoint.atomic_save({n: m.state_dict() for n, m in models.items()}, final, "the final models")
        self.store.add_artifact(self.run_id, "model", final, "state_dict")
        # the whole test split's logits of the student and its teacher (or reference peer), for the app's figures;
        # not for text runs (one row per token: ~18 MB, and the Language models page reads the models instead)
        side = state.teacher if state.teacher is not None else scheme.probe_reference()
        if state.data.modality != "text":
            logits = loop.test_logits({"student": next(iter(models.values())), **({"reference": side} if side is not
                                                                                  None else {})}, state.data,
                                      cfg.batch_size * 4)
            logits["reference_name"] = "teacher" if state.teacher is not None else "reference peer"
            checkpoint.atomic_save(logits, self.run_dir / "test_logits.pt", "the test-split logits")
            self.store.add_artifact(self.run_id, "test_logits", self.run_dir / "test_logits.pt", "logits")
        scheme.save_artifacts(self.run_dir, self.store, self.run_id)
        self.store.log_metrics(self.run_id, "final", cfg.epochs, state.step,
                               {k: v for k, v in summary.items() if isinstance(v, float)})
        return summary


def run(config: RunConfig | dict | None = None, store: Store | None = None, on_event=None,
        cancel: threading.Event | None = None, **overrides) -> dict:
    """Train one run from Python (a notebook): returns the summary dict with its run_id.
    overrides: config fields, e.g. run(cfg, epochs=3)."""
    if config is None:
        config = RunConfig()
    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    if overrides:
        config = RunConfig.from_dict(config.to_dict() | overrides)
    return Trainer(config, store, on_event, cancel).run()
