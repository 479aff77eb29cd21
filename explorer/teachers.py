"""Where a run's teacher comes from, decided here only: the trainer, every page and the scripts ask.

    ref = locate(store, cfg)          # TeacherRef: checkpoint | run | bundled | train
    model = load(ref, make_model(ref.arch), store)

Order: the config's checkpoint file; a finished teacher run with the same recipe; a teacher bundled in
data/teachers/ (named by its recipe hash); else "train" -- the trainer trains one (once) and records
it as a run, which later runs then find. The reference a run used is stored with the run (`record`),
so every view names and loads the teacher the run really had (`of_run`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .checkpoints import load_checkpoint_into
from .config import RunConfig
from .recipes import recipe_hash, resolve, teacher_recipe
from .resources import TEACHERS

BUNDLED = TEACHERS   # data/teachers/ of the checkout, or its copy in an installed wheel (explorer/resources.py)
SOURCES = ("checkpoint", "run", "bundled", "train")


@dataclass(frozen=True)
class TeacherRef:
    arch: str
    source: str                     # one of SOURCES
    path: str | None = None         # the weights' file (checkpoint, bundled, run once known)
    run_id: str | None = None       # the teacher's own run (source "run")
    test_acc: float | None = None   # as recorded where it came from
    epochs: int | None = None       # source "train": the recipe's epochs

    def describe(self) -> str:
        return {"checkpoint": f"the checkpoint {self.path}",
                "run": f"reused from run {self.run_id}",
                "bundled": f"bundled with KD Explorer (data/teachers/{Path(self.path or '').name})",
                "train": f"trained by the first run ({self.epochs} epochs), then reused"}[self.source]

    @property
    def state_key(self) -> str | None:
        """Where the state_dict sits in the file: a plain state_dict for checkpoints, a run's model.pt else."""
        return None if self.source == "checkpoint" else "student"

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, text: str | None, arch: str | None = None) -> "TeacherRef | None":
        """A stored reference; also the older stores' strings ('bundled:NAME', 'file:PATH', a run id)."""
        if not text:
            return None
        if text.startswith("{"):
            return cls(**json.loads(text))
        if text.startswith("bundled:"):
            return cls(arch or "", "bundled", str(BUNDLED / Path(text[8:]).name))
        if text.startswith("file:"):
            return cls(arch or "", "checkpoint", text[5:])
        return cls(arch or "", "run", run_id=text)


def bundled_path(rhash: str) -> Path | None:
    """Teachers shipped in data/teachers/, named by their recipe hash (see scripts/train_default_teachers.py)."""
    path = BUNDLED / f"{rhash}.pt"
    return path if path.is_file() else None


def bundled_info(path: str | Path) -> dict:
    info = Path(path).with_suffix(".json")
    return json.loads(info.read_text()) if info.is_file() else {}


def locate(store, cfg: RunConfig, arch: str | None = None) -> TeacherRef:
    """The teacher `cfg` gets for architecture `arch` (default: its teacher), without loading anything."""
    cfg = resolve(cfg)
    arch = arch or cfg.teacher
    if cfg.teacher_ckpt and arch == cfg.teacher:
        return TeacherRef(arch, "checkpoint", cfg.teacher_ckpt)
    tcfg = teacher_recipe(cfg, arch)
    rhash = recipe_hash(tcfg)
    found = store.find_completed(rhash)
    if found is not None:
        return TeacherRef(arch, "run", run_id=found["id"], test_acc=found["summary"].get("test_acc"))
    bundled = bundled_path(rhash)
    if bundled is not None:
        return TeacherRef(arch, "bundled", str(bundled), test_acc=bundled_info(bundled).get("test_acc"))
    return TeacherRef(arch, "train", epochs=tcfg.epochs)


def locate_default(store, dataset: str, data_root: str | None = None) -> TeacherRef:
    """The dataset's default teacher, as a run with default settings would get it."""
    return locate(store, RunConfig(dataset=dataset, data_root=data_root))


def weights_path(ref: TeacherRef, store) -> Path:
    if ref.source == "train":
        raise ValueError(f"teacher {ref.arch} has not been trained yet; train it first (any run does)")
    if ref.source == "run":
        return Path(store.artifacts(ref.run_id)["model"])
    return Path(ref.path)


def load(ref: TeacherRef, model: nn.Module, store, weights: bool = True) -> nn.Module:
    """`model` (built for ref.arch) with the teacher's weights, frozen in eval mode.
    weights=False: only freeze (a torchrun rank other than 0 gets the weights broadcast)."""
    if weights:
        load_checkpoint_into(model, weights_path(ref, store), ref.state_key)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def record(store, run_id: str, ref: TeacherRef) -> None:
    store.update_run(run_id, teacher_ref=ref.to_json())


def of_run(run: dict) -> TeacherRef | None:
    """The teacher a recorded run used (None: it had none, or it has not got one yet)."""
    text = run.get("teacher_ref") or run.get("teacher_run")   # teacher_run: stores written before teachers.py
    return TeacherRef.from_json(text, run.get("config", {}).get("teacher"))


