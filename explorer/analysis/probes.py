"""Probe files: what a fixed batch of samples looked like to both models at a given epoch.

One file per epoch, `probe_epoch{E:03d}.pt` (canonically under <run_dir>/probes/), written with
torch.save and read with torch.load(weights_only=True), so it holds only plain tensors, lists,
dicts, str and int:

    {"version": 1,
     "epoch": int,
     "x": (N, C, H, W) float32 (as fed to the models, i.e. normalised),
     "y": (N,) int64,
     "index": (N,) int64 (dataset indices of the probe samples),
     "student": {"logits": (N, K) float32,
                 "stages": [(N, C_i, H_i, W_i) float16, ...],   # shallow -> deep
                 "stage_names": [str, ...],
                 "embedding": (N, D) float32},
     "teacher": {same keys}}

Transformers (a model declaring `kd_attention`, e.g. the zoo's vit_* / deit_*) add two optional keys to their
side, which older files simply lack (every reader treats them as absent):
                 "cls_attention": (N, blocks, heads, h, w) float16,   # each block's class-token attention per head
                 "rollout": (N, h, w) float32                          # attention rollout (analysis/rollout.py)

Stages are stored as float16 to keep files compact (a stage whose values exceed float16's range,
|v| > 65504, is kept in float32 instead); every analysis function upcasts as needed. Tensors are
cloned before saving, so a view never drags its whole parent storage into the file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ..models.taps import tap
from ._util import as_tensor, eval_mode, model_device
from .rollout import cls_attention, rollout_map

__all__ = ["save_probe", "load_probe", "list_probes", "probe_path", "capture_probe", "PROBE_VERSION"]

PROBE_VERSION = 1
_FP16_MAX = 65504.0
_SIDE_KEYS = ("logits", "stages", "stage_names", "embedding")
_OPTIONAL_KEYS = ("cls_attention", "rollout")   # transformers only
_NAME = re.compile(r"^probe_epoch(\d+)\.pt$")


def probe_path(run_dir, epoch: int) -> Path:
    """The canonical location of a run's probe file for `epoch`."""
    return Path(run_dir) / "probes" / f"probe_epoch{int(epoch):03d}.pt"


def _plain(t, dtype=None) -> torch.Tensor:
    t = as_tensor(t)
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous().clone()


def _stage16(t) -> torch.Tensor:
    t = as_tensor(t).float()
    if t.numel() and t.abs().max() > _FP16_MAX:
        return _plain(t, torch.float32)
    return _plain(t, torch.float16)


def _side(side: dict, n: int, who: str) -> dict:
    missing = [k for k in _SIDE_KEYS if k not in side]
    if missing:
        raise ValueError(f"probe {who}: missing keys {missing}; need {list(_SIDE_KEYS)}")
    stages, names = list(side["stages"]), [str(s) for s in side["stage_names"]]
    if len(stages) != len(names):
        raise ValueError(f"probe {who}: {len(stages)} stages but {len(names)} stage_names")
    out = {"logits": _plain(side["logits"], torch.float32),
           "stages": [_stage16(s) for s in stages],
           "stage_names": names,
           "embedding": _plain(side["embedding"], torch.float32)}
    if side.get("cls_attention") is not None:
        out["cls_attention"] = _stage16(side["cls_attention"])
    if side.get("rollout") is not None:
        out["rollout"] = _plain(side["rollout"], torch.float32)
    if out["embedding"].dim() > 2:
        out["embedding"] = out["embedding"].reshape(out["embedding"].shape[0], -1)
    for k, v in [("logits", out["logits"]), ("embedding", out["embedding"])] + \
            [(f"stage {nm!r}", s) for nm, s in zip(names, out["stages"])] + \
            [(k, out[k]) for k in _OPTIONAL_KEYS if k in out]:
        if v.shape[0] != n:
            raise ValueError(f"probe {who}: {k} has {v.shape[0]} rows, expected N={n}")
    return out


def save_probe(path, epoch: int, x, y, index, student: dict, teacher: dict) -> Path:
    """Write one probe file (format in the module docstring); creates parent folders; atomic."""
    x = _plain(x, torch.float32)
    n = x.shape[0]
    y = _plain(y, torch.long).reshape(-1)
    index = _plain(index, torch.long).reshape(-1)
    if y.shape[0] != n or index.shape[0] != n:
        raise ValueError(f"probe: x has {n} samples but y has {y.shape[0]} and index {index.shape[0]}")
    data = {"version": PROBE_VERSION, "epoch": int(epoch), "x": x, "y": y, "index": index,
            "student": _side(student, n, "student"), "teacher": _side(teacher, n, "teacher")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_probe(path) -> dict:
    """Read a probe file (torch.load weights_only=True) and check its keys."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    need = ("epoch", "x", "y", "index", "student", "teacher")
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"{path}: not a probe file (missing {missing})")
    for who in ("student", "teacher"):
        miss = [k for k in _SIDE_KEYS if k not in data[who]]
        if miss:
            raise ValueError(f"{path}: probe {who} lacks {miss}")
    return data


def list_probes(run_dir) -> list[tuple[int, Path]]:
    """[(epoch, path)] sorted by epoch, from <run_dir>/probes/ and <run_dir> itself."""
    run_dir = Path(run_dir)
    found: dict[int, Path] = {}
    for folder in (run_dir, run_dir / "probes"):
        if folder.is_dir():
            for p in folder.iterdir():
                m = _NAME.match(p.name)
                if m and p.is_file():
                    found[int(m.group(1))] = p
    return sorted(found.items())


@torch.no_grad()
def capture_probe(model: nn.Module, x, stage_specs, embedding_spec: str, batch_size: int = 256,
                  check_cancel=None, attention_specs=()) -> dict:
    """Run `model` on the probe batch (eval mode, no grad; train/eval flags restored) and return
    one side of a probe: {"logits", "stages", "stage_names", "embedding"} (float32 on CPU; save_probe
    casts stages to float16). check_cancel (a run's) is called before each batch. attention_specs (a
    transformer's kd_attention, blocks first to last) add "cls_attention" and "rollout" (module docstring);
    the model's kd_prefix_tokens (default 1) says where the patch tokens start."""
    stage_specs, attention_specs = [str(s) for s in stage_specs], [str(s) for s in attention_specs or ()]
    specs = list(dict.fromkeys(stage_specs + [embedding_spec] + attention_specs))
    x = as_tensor(x).float()
    dev = model_device(model)
    logits, feats = [], {s: [] for s in specs}
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            if check_cancel is not None:
                check_cancel()
            with tap(model, specs) as f:
                out = model(x[i:i + batch_size].to(dev))
            logits.append(out.detach().float().cpu())
            for s in specs:
                feats[s].append(f[s].detach().float().cpu())
    cat = {s: torch.cat(v) for s, v in feats.items()}
    emb = cat[embedding_spec]
    out = {"logits": torch.cat(logits), "stages": [cat[s] for s in stage_specs],
           "stage_names": stage_specs, "embedding": emb.reshape(emb.shape[0], -1)}
    if attention_specs:
        prefix = int(getattr(model, "kd_prefix_tokens", None) or 1)
        attn = [cat[s] for s in attention_specs]
        try:
            out["cls_attention"], out["rollout"] = cls_attention(attn, prefix), rollout_map(attn, prefix)
        except ValueError:   # blocks of different token counts, patches off a square grid: no attention views
            pass
    return out
