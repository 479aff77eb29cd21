"""Attention inside the object, for datasets whose object masks are known (the procedural `shapes`): the
Attention page's numbers behind "the distilled student looks where the teacher looks". No Streamlit here.

For a distilled run, its teacher (the probes' teacher side), the student trained alone (the same recipe with no
distillation, when that run exists) and the distilled student: the fraction of each stage's activation attention
that falls inside the object mask (explorer.analysis.mask_fraction), per class, at every recorded probe epoch;
and of each final model's Grad-CAM. For a transformer side, its attention rollout (the probe's
"rollout", map="rollout") is scored the same way. Probes hold the first test images (probe["index"] = their test-split rows),
so the masks are the dataset's extras["test_masks"][index].
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..analysis.mask_fraction import mask_area, mask_fraction, rollout_mask_fraction, stage_mask_fractions

MODELS = ("teacher", "student alone", "distilled student")


def test_masks(cfg: Mapping) -> torch.Tensor | None:
    """The test split's object masks (bool (N, H, W)) of a run's dataset, or None when it has none."""
    return _test_masks(cfg["dataset"], cfg.get("data_root"), cfg.get("image_size"))


@lru_cache(maxsize=4)
def _test_masks(name: str, root: str | None, image_size: int | None) -> torch.Tensor | None:
    from ..data.loader import read_raw   # no split, no copy to a device
    try:
        raw = read_raw(name, root, image_size)
    except (KeyError, OSError, ValueError):
        return None
    masks = (raw.extras or {}).get("test_masks")
    return None if masks is None else torch.as_tensor(masks).to(torch.bool)


def probe_masks(cfg: Mapping, probe: Mapping) -> torch.Tensor | None:
    """The masks of a probe's samples (its test-split rows, probe["index"]), or None (no masks, or a mismatch)."""
    masks = test_masks(cfg)
    return None if masks is None else _index_masks(masks, probe)


def _index_masks(masks: torch.Tensor, probe: Mapping) -> torch.Tensor | None:
    idx = torch.as_tensor(probe["index"], dtype=torch.int64).reshape(-1)
    if idx.numel() and int(idx.max()) >= masks.shape[0]:
        return None
    m = masks[idx]
    return m if tuple(m.shape[-2:]) == tuple(probe["x"].shape[-2:]) else None


def _rows(model: str, epoch: int, fractions: Mapping[str, np.ndarray], y: np.ndarray, classes, kind: str) -> list:
    rows = []
    for depth, (stage, f) in enumerate(fractions.items()):
        for k, name in enumerate(classes):
            sel = (y == k) & ~np.isnan(f)
            if sel.any():
                rows.append(dict(model=model, epoch=int(epoch), depth=depth, stage=stage, map=kind, cls=name,
                                 fraction=float(f[sel].mean()), n=int(sel.sum())))
    return rows


def probe_fractions(probe: Mapping, masks, classes, models: Mapping[str, str] | None = None) -> list[dict]:
    """Rows (model, epoch, depth, stage, map="attention", cls, fraction, n) for one probe's two sides.
    models: which row name each probe side gets ({"teacher": "teacher", "student": "distilled student"})."""
    y = np.asarray(probe["y"]).reshape(-1)
    rows = []
    for side, model in (models or {"teacher": "teacher", "student": "distilled student"}).items():
        rows += _rows(model, probe["epoch"], stage_mask_fractions(probe[side], masks), y, classes, "attention")
        roll = rollout_mask_fraction(probe[side], masks)
        if roll is not None:   # a transformer: its attention rollout too, one more map (map="rollout")
            last = len(probe[side]["stages"]) - 1
            rows += [dict(r, depth=last) for r in _rows(model, probe["epoch"], {"rollout": roll}, y, classes,
                                                        "rollout")]
    return rows


def run_fractions(run: Mapping, alone: Mapping | None, classes, load_probe, distilled: bool = True) -> pd.DataFrame:
    """Every recorded epoch of a distilled run (teacher and distilled student) and of its student-alone run.
    load_probe: path -> probe dict (the app passes its cache). distilled=False: `run` is itself a student
    trained alone (its student rows are named so). Empty frame when the dataset has no masks."""
    from ..analysis.probes import list_probes
    all_masks = test_masks(run["config"])
    rows = []
    if all_masks is None:
        return pd.DataFrame(rows)
    for r, models in ((run, {"teacher": "teacher", "student": "distilled student" if distilled else "student alone"}),
                      (alone, {"student": "student alone"})):
        if r is None or not r.get("run_dir"):
            continue
        for epoch, path in list_probes(r["run_dir"]):
            probe = load_probe(path)
            masks = _index_masks(all_masks, probe)
            if masks is not None:
                rows += probe_fractions(probe, masks, classes, models)
    return pd.DataFrame(rows)


def gradcam_fractions(models: Mapping[str, torch.nn.Module | None], x, y, masks, classes) -> pd.DataFrame:
    """Rows as probe_fractions (map="gradcam", epoch=-1: the final models) for every stage of each given model
    (the teacher, the student alone, the distilled student), Grad-CAM of each sample's true class."""
    from ..analysis import stage_maps
    from ..models.outputs import TapSpecs
    y = np.asarray(y).reshape(-1)
    rows = []
    for name, model in models.items():
        if model is None:
            continue
        maps = stage_maps(model, x, TapSpecs.of(model).stages, target=torch.as_tensor(y))["gradcam"]
        rows += _rows(name, -1, {s: mask_fraction(m, masks) for s, m in maps.items()}, y, classes, "gradcam")
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame, by=("model", "epoch", "depth", "stage", "map")) -> pd.DataFrame:
    """Per-class rows -> one mean over the classes (each class weighted by its samples)."""
    if df.empty:
        return df
    g = df.assign(w=df["fraction"] * df["n"]).groupby(list(by), as_index=False)[["w", "n"]].sum()
    return g.assign(fraction=g["w"] / g["n"]).drop(columns="w")


def last_epoch_table(df: pd.DataFrame) -> pd.DataFrame:
    """The deepest-to-shallowest attention fractions at each model's last recorded epoch: rows = stage depth,
    columns = models (teacher, student alone, distilled student)."""
    s = summary(df[df["map"] == "attention"]) if not df.empty else df
    if s.empty:
        return s
    last = s[s["epoch"] == s.groupby("model")["epoch"].transform("max")]
    t = last.pivot_table(index="depth", columns="model", values="fraction")
    return t[[m for m in MODELS if m in t.columns]]


def chance_level(masks) -> float:
    """What a map that ignores the image scores: the mean mask area."""
    return float(np.mean(mask_area(masks)))


def rollout_table(df: pd.DataFrame) -> pd.DataFrame:
    """The attention rollout's fraction inside the object at each model's last recorded epoch: one row
    ("rollout"), a column per transformer model; empty when no model is a transformer."""
    s = summary(df[df["map"] == "rollout"]) if not df.empty and "map" in df else pd.DataFrame()
    if s.empty:
        return s
    last = s[s["epoch"] == s.groupby("model")["epoch"].transform("max")]
    t = last.pivot_table(index="stage", columns="model", values="fraction")
    return t[[m for m in MODELS if m in t.columns]]
