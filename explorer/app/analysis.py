"""The analysis pages' logic, with no Streamlit in it: runs with probes, dataset metadata, picking and
slicing probe samples, the stage pairs a run distilled, its rebuilt models, and Home's map and playground.
Teachers come from explorer.teachers only (the one place that knows where a run's teacher is)."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from .. import teachers
from ..checkpoints import load_checkpoint_into
from ..data import load_dataset
from ..kd import get_method, list_methods
from ..kd.pairing import pair_stages
from ..models import create_model
from ..schemes import get_scheme, list_schemes
from ..store import Store
from .datasets import dataset_meta
from .runs import is_alone, run_label

SAMPLE_MODES = {"all": "all probe samples", "class": "by class", "index": "by index",
                "disagree": "where they disagree most"}


# ---------------------------------------------------------------------- runs, probes, samples
def analysis_runs(store: Store) -> list[dict]:
    """Completed runs that recorded probes, newest first; distilled runs before students trained alone
    (a preset's comparison run finishes last, but the distilled run is the one to look at)."""
    from ..analysis.probes import list_probes
    runs = [r for r in reversed(store.list_runs(status="completed"))
            if r["run_dir"] and not is_text_run(r) and list_probes(r["run_dir"])]
    return sorted(runs, key=is_alone)


def is_text_run(run: Mapping) -> bool:
    """A run on a text dataset (a language model): the Language models page shows it, the image pages do not."""
    from ..data import DATASETS, get_dataset_spec
    name = run.get("config", {}).get("dataset")
    return name in DATASETS and get_dataset_spec(name).modality == "text"


def lm_runs(store: Store) -> list[dict]:
    """Completed runs on text datasets, newest first, with their final model saved."""
    return [r for r in reversed(store.list_runs(status="completed"))
            if r["run_dir"] and is_text_run(r) and "model" in store.artifacts(r["id"])]


def nearest(values: list[int], want: int) -> int:
    return min(values, key=lambda v: (abs(v - want), -v))


def sample_positions(probe: Mapping, mode: str, value: Any = None, k: int = 8) -> np.ndarray:
    """Rows of a probe to show: all, the first k of one class, given rows, or the k with the largest
    teacher–student disagreement (different top-1 first, then by KL)."""
    from ..analysis import disagreements
    y = np.asarray(probe["y"]).reshape(-1)
    n = y.size
    if mode == "all":
        return np.arange(n)
    if mode == "class":
        return np.flatnonzero(y == int(value))[:k]
    if mode == "index":
        return np.array([int(i) for i in (value or []) if 0 <= int(i) < n], dtype=int)
    if mode == "disagree":
        df = disagreements(probe["teacher"]["logits"], probe["student"]["logits"], y, k=k)
        return df["position"].to_numpy()
    raise ValueError(f"sample mode must be one of {list(SAMPLE_MODES)}, got {mode!r}")


def subset(probe: Mapping, pos) -> dict:
    """A probe restricted to rows `pos` (every per-sample tensor sliced the same way). Where the probe
    came from (its file's path and mtime, when known) and the rows taken are kept: they key cached results."""
    rows = [int(p) for p in np.asarray(pos, dtype=np.int64).reshape(-1)]
    idx = torch.as_tensor(rows, dtype=torch.int64)   # a copy: `pos` may be a read-only pandas view

    def side(s):
        out = {"logits": s["logits"][idx], "stages": [f[idx] for f in s["stages"]],
               "stage_names": list(s["stage_names"]), "embedding": s["embedding"][idx]}
        for k in ("cls_attention", "rollout"):   # a transformer's (explorer.analysis.probes), absent otherwise
            if s.get(k) is not None:
                out[k] = s[k][idx]
        return out
    return {"epoch": probe["epoch"], "x": probe["x"][idx], "y": probe["y"][idx], "index": probe["index"][idx],
            "student": side(probe["student"]), "teacher": side(probe["teacher"]),
            "path": probe.get("path"), "mtime": probe.get("mtime"), "positions": tuple(rows)}


def reference_name(run: Mapping) -> str:
    """What a probe's "teacher" side is for this run: the teacher, or (no teacher) the scheme's reference."""
    try:
        return "teacher" if get_scheme(run["config"].get("scheme", "offline")).needs_teacher else "reference peer"
    except KeyError:
        return "teacher"


def is_transformer(side: Mapping) -> bool:
    """A probe side recorded by a transformer: it holds the class-token attention and the rollout."""
    return side.get("rollout") is not None and side.get("cls_attention") is not None


_BLOCK = re.compile(r"^(?:.*\.)?blocks\.(\d+)$")


def stage_label(name: str) -> str:
    """How a stage is labelled on the pages: "block i" (1-based) for a transformer block (`blocks.3`,
    `encoder.blocks.3`), else its name."""
    m = _BLOCK.match(str(name))
    return f"block {int(m.group(1)) + 1}" if m else str(name)


def block_labels(df: pd.DataFrame) -> pd.DataFrame:
    """A stage x stage frame (CKA) with its transformer axes relabelled "block i"."""
    return df.rename(index=stage_label, columns=stage_label)


# ---------------------------------------------------------------------- the stage pairs a run distilled
def stage_pair_indices(probe: Mapping, run: Mapping | None = None) -> list[tuple[int, int]]:
    """(student stage, teacher stage) indices into the probe's stages, shallow to deep: the pairs the run's
    methods distilled, as its summary records them (summary["stage_pairs"]: {method: [[s, t], ...]}),
    else the pairs explorer.kd.pairing.pair_stages gives for the probe's stage shapes, honouring the
    config's explicit stage_pairs (what every feature method pairs by default). A run that distilled no
    stage (logits only) gets the default pairs too: they are what a feature method would compare."""
    ns, nt = len(probe["student"]["stages"]), len(probe["teacher"]["stages"])
    if not ns or not nt:
        return []
    recorded = ((run or {}).get("summary") or {}).get("stage_pairs") or {}
    pairs = {(int(i), int(j)) for per_method in recorded.values() for i, j in per_method or []}
    pairs = sorted(p for p in pairs if p[0] < ns and p[1] < nt)
    if pairs:
        return pairs
    explicit = ((run or {}).get("config") or {}).get("stage_pairs")
    shapes = lambda side: [tuple(f.shape[1:]) for f in probe[side]["stages"]]  # noqa: E731
    try:
        return pair_stages(shapes("student"), shapes("teacher"), explicit=explicit, need_maps=False)
    except ValueError:   # explicit pairs outside this probe's stages: pair it automatically
        return pair_stages(shapes("student"), shapes("teacher"), need_maps=False)


def stage_pairs(probe: Mapping, run: Mapping | None = None) -> list[tuple[str, str]]:
    """The pairs of stage_pair_indices, by the probe's stage names: what the Attention and CKA views label."""
    s, t = list(probe["student"]["stage_names"]), list(probe["teacher"]["stage_names"])
    return [(s[i], t[j]) for i, j in stage_pair_indices(probe, run)]


# ---------------------------------------------------------------------- models
def _model_maker(cfg: Mapping):
    meta = dataset_meta(cfg["dataset"], cfg.get("data_root"))
    from ..models.sequence import build_args
    return lambda arch: create_model(arch, **build_args(meta["shape"], len(meta["classes"])))


def rebuild_models(store: Store, run: Mapping) -> dict:
    """The run's final student and the teacher it really had (teachers.of_run) as CPU modules in eval mode,
    for Grad-CAM / saliency: {"student": model, "teacher": model or None}. Weights are read weights-only."""
    cfg = run["config"]
    make = _model_maker(cfg)
    out = {"student": load_checkpoint_into(make(cfg["student"]), store.artifacts(run["id"])["model"], "student"),
           "teacher": None}
    ref = teachers.of_run(dict(run))
    if ref is not None and ref.source != "train" and (ref.arch or cfg.get("teacher")):
        try:
            out["teacher"] = teachers.load(ref, make(ref.arch or cfg["teacher"]), store)
        except (KeyError, OSError, ValueError):    # its run deleted, its file gone
            out["teacher"] = None
    for m in out.values():
        if m is not None:
            m.eval().requires_grad_(True)   # attributions need gradients through the (frozen) teacher too
    return out


def final_gradcam(model: torch.nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """(B, H, W) Grad-CAM of the model's deepest stage for `target`: captum's (analysis.gradcam) for a CNN; for a
    transformer (kd_attention) the tap-based analysis.stage_maps', which sees the block's tokens as their (C, h, w)
    map (captum's layer hook gets the raw (B, N, C) tokens and cannot upsample them)."""
    from ..analysis import gradcam, stage_maps
    from ..models.outputs import TapSpecs
    spec = TapSpecs.of(model).stages[-1]
    if getattr(model, "kd_attention", None):
        return torch.as_tensor(stage_maps(model, x, [spec], target=torch.as_tensor(target))["gradcam"][spec])
    return gradcam(model, x, spec, target=target)


# ---------------------------------------------------------------------- the concept map & playground
def taxonomy() -> pd.DataFrame:
    """The survey's map from the registries: knowledge types (methods) and schemes/algorithms."""
    rows = []
    for branch, keys, get in (("knowledge", list_methods(), get_method), ("scheme", list_schemes(), get_scheme)):
        for k in keys:
            d = get(k).describe()
            rows.append({"branch": branch, "category": d["category"], "key": k, "name": d["name"],
                         "year": d["year"], "venue": d["venue"], "paper": d["paper"]})
    return pd.DataFrame(rows)


def playground_logits(store: Store, n: int = 6) -> dict | None:
    """A real teacher's logits on a few test images: from the newest run's probe, else the digits default
    teacher (teachers.locate_default: bundled, or reused from a run) on the first test images. None when
    neither exists."""
    from ..analysis.probes import list_probes, load_probe
    for run in analysis_runs(store):
        if reference_name(run) != "teacher":
            continue
        epoch, path = list_probes(run["run_dir"])[-1]
        p = load_probe(path)
        meta = dataset_meta(run["config"]["dataset"], run["config"].get("data_root"))
        ref = teachers.of_run(run)
        arch = (ref.arch if ref else "") or run["config"].get("teacher")
        return {"logits": p["teacher"]["logits"][:n], "x": p["x"][:n], "y": p["y"][:n], **meta,
                "source": f"teacher {arch} of run {run_label(run)}"}
    ref = teachers.locate_default(store, "digits")
    return None if ref.source == "train" else _default_playground(ref, str(store.home), n)


@lru_cache(maxsize=2)
def _default_playground(ref: teachers.TeacherRef, home: str, n: int) -> dict:

    data = load_dataset("digits", None, None, torch.device("cpu"))
    model = teachers.load(ref, _model_maker({"dataset": "digits"})(ref.arch), Store(home))
    x = data.normalize(data.test.x[:n])
    with torch.no_grad():
        logits = model(x)
    where = "bundled" if ref.source == "bundled" else ref.describe()
    return {"logits": logits, "x": x, "y": data.test.y[:n], **dataset_meta("digits"),
            "source": f"the digits default teacher ({ref.arch}, {where})"}
