"""A dataset's tuned defaults: data/tuned/<dataset>.yaml, written by `kd-explorer tune` (explorer/tune.py),
read by recipes.resolve (the `defaults` field: tuned | benchmark) and by the Train form's label.

    entry = tuned_entry("digits", "methods", "at")   # {"weight": 31.6, "params": {"p": 2}, ...} or None

The file is versioned (SCHEMA) and carries the evidence with the values: every trial's settings and its
validation accuracy per seed, the protocol and the budget. It is checked on reading: an unknown method or
scheme, an unknown hyperparameter or a value out of its range is a ConfigError naming the file and the entry.

Two optional fields: `pair` -- the run-config fields a key was tuned with because the dataset's default pair
refuses it (FSP's equal channels, MiniLM's attention, DeiT's distillation token); the entry then applies only to
runs whose teacher/student are that pair's. `not_tuned` -- a note saying why a key has no tuned values on this
dataset (nothing of its own to tune, or it runs on other data): no weight, empty params, never applied.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .resources import ROOT

SCHEMA = 1
KINDS = ("methods", "schemes")
TUNED_DIR = ROOT / "data" / "tuned"
_CACHE: dict[str, tuple[float, dict | None]] = {}


def tuned_dir() -> Path:
    """KD_EXPLORER_TUNED_DIR (tests, a user's own tuning), else the checkout's data/tuned/."""
    env = os.environ.get("KD_EXPLORER_TUNED_DIR")
    return Path(env) if env else TUNED_DIR


def tuned_path(dataset: str, folder: str | Path | None = None) -> Path:
    return Path(folder or tuned_dir()) / f"{dataset}.yaml"


# ------------------------------------------------------------------ reading and checking
def load_tuned(dataset: str, folder: str | Path | None = None) -> dict | None:
    """The checked contents of the dataset's tuned file, or None when there is none (cached by mtime)."""
    path = tuned_path(dataset, folder)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    key = str(path)
    if key in _CACHE and _CACHE[key][0] == mtime:
        return _CACHE[key][1]
    data = read_file(path)
    if data.get("dataset") != dataset:
        raise ConfigError("defaults", f"{path} is for dataset {data.get('dataset')!r}, not {dataset!r}")
    _CACHE[key] = (mtime, data)
    return data


def read_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise ConfigError("defaults", f"{path} is not valid YAML: {str(e)[:200]}") from None
    validate(data, str(path))
    return data


def validate(data: Any, where: str = "tuned file") -> dict:
    """Raise ConfigError naming the entry unless `data` is a tuned file this version reads."""
    if not isinstance(data, dict):
        raise ConfigError("defaults", f"{where}: expected a mapping, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ConfigError("defaults", f"{where}: schema {data.get('schema')!r} is not {SCHEMA}, the version this "
                          "KD Explorer reads; re-run `kd-explorer tune`")
    if not isinstance(data.get("dataset"), str):
        raise ConfigError("defaults", f"{where}: names no dataset")
    for kind in KINDS:
        entries = data.get(kind) or {}
        if not isinstance(entries, dict):
            raise ConfigError("defaults", f"{where}: {kind} must be a mapping of keys to entries")
        for key, entry in entries.items():
            _check_entry(kind, key, entry, f"{where}: {kind}.{key}")
    return data


def _check_entry(kind: str, key: str, entry: Any, where: str) -> None:
    from .config import WEIGHT
    specs = _hparams(kind, key, where)
    if not isinstance(entry, dict):
        raise ConfigError("defaults", f"{where}: must be a mapping with weight/params")
    weight = entry.get("weight")
    if weight is not None:
        if kind != "methods":
            raise ConfigError("defaults", f"{where}: a scheme's weights are its params; 'weight' is for methods")
        p = WEIGHT.problem(weight)
        if p is not None:
            raise ConfigError("defaults", f"{where}.weight {p}")
    _check_pair(entry.get("pair"), where)
    if entry.get("not_tuned") is not None and (weight is not None or entry.get("params")
                                               or not isinstance(entry["not_tuned"], str)):
        raise ConfigError("defaults", f"{where}: not_tuned is a note (a string) for an entry with no weight "
                          "and empty params")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("defaults", f"{where}.params must be a mapping of hyperparameter names to values")
    for name, value in params.items():
        if name not in specs:
            raise ConfigError("defaults", f"{where}.params.{name} is unknown for {key!r}; allowed: "
                              f"{', '.join(specs) or 'none'}")
        p = specs[name].problem(value)
        if p is not None:
            raise ConfigError("defaults", f"{where}.params.{name} {p}")


# the fields of an entry's `pair` that decide whether it applies to a run (the rest are the recipe it was tuned at)
PAIR_MATCH = ("teacher", "student")


def _check_pair(pair: Any, where: str) -> None:
    if pair is None:
        return
    from dataclasses import fields
    from .config import RunConfig
    known = {f.name for f in fields(RunConfig)}
    if not isinstance(pair, dict) or not pair:
        raise ConfigError("defaults", f"{where}.pair must be a non-empty mapping of run-config fields to values")
    bad = sorted(set(pair) - known)
    if bad:
        raise ConfigError("defaults", f"{where}.pair names {', '.join(bad)}, which are not run-config fields")
    if any(not isinstance(v, (str, int, float, bool)) for v in pair.values()):
        raise ConfigError("defaults", f"{where}.pair values must be plain strings, numbers or booleans")


def applies_to(entry: dict, cfg) -> bool:
    """Whether a tuned entry belongs to `cfg`'s run: an entry tuned on a pair of its own applies only to runs of
    that teacher and student (the dataset's defaults filling unset ones); a `not_tuned` note never fills."""
    if entry.get("not_tuned") is not None:
        return False
    pair = entry.get("pair") or {}
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    defaults = None
    for field in PAIR_MATCH:
        if field not in pair:
            continue
        value = get(field)
        if not value:
            if defaults is None:
                from .data import get_dataset_spec
                defaults = get_dataset_spec(get("dataset", "digits") or "digits")
            value = defaults.default_teacher if field == "teacher" else defaults.default_student
        if value != pair[field]:
            return False
    return True


def _hparams(kind: str, key: str, where: str) -> dict:
    from .spec import not_allowed
    if kind == "methods":
        from .kd import METHODS as reg
    else:
        from .schemes import SCHEMES as reg
    if key not in reg:
        raise ConfigError("defaults", f"{where}: {not_allowed(key, reg.list())}")
    return {h.name: h for h in reg.get(key).hparams}


def tuned_entry(dataset: str, kind: str, key: str) -> dict | None:
    data = load_tuned(dataset)
    return None if data is None else (data.get(kind) or {}).get(key)


def has_tuned(dataset: str, methods: list[str], scheme: str, cfg=None) -> bool:
    """Whether the dataset's tuned file has an entry for one of these methods or this scheme that applies
    (`cfg`, a RunConfig or its dict: to its pair; without it, to the dataset's default pair)."""
    data = load_tuned(dataset)
    if data is None:
        return False
    cfg = cfg if cfg is not None else {"dataset": dataset}
    entries = [(data.get("schemes") or {}).get(scheme)] + [(data.get("methods") or {}).get(m) for m in methods]
    return any(e is not None and applies_to(e, cfg) for e in entries)


# ------------------------------------------------------------------ applying (recipes.resolve calls this)
def apply_defaults(cfg) -> None:
    """Fill `cfg.defaults` (None: tuned where the dataset has a tuned entry for the run, else benchmark), and
    under tuned the unset weights and hyperparameters of its methods and scheme from the tuned file. A value
    the user gave always wins; what is filled is stored with the run's config, so it reproduces."""
    keys = [t.key for t in cfg.methods]
    if cfg.role == "teacher":
        cfg.defaults = cfg.defaults or "benchmark"
        return
    found = has_tuned(cfg.dataset, keys, cfg.scheme, cfg)
    if cfg.defaults is None:
        cfg.defaults = "tuned" if found else "benchmark"
    if cfg.defaults != "tuned":
        return
    if load_tuned(cfg.dataset) is None:
        if _already_filled(cfg):   # a stored run's config (resumed, rerun): its values were filled when it was made
            return
        raise ConfigError("defaults", f"there are no tuned defaults for {cfg.dataset!r} ({tuned_path(cfg.dataset)} "
                          f"does not exist): run `kd-explorer tune METHOD --dataset {cfg.dataset}`, or choose "
                          "benchmark")
    for term in cfg.methods:
        entry = tuned_entry(cfg.dataset, "methods", term.key)
        if entry is None or not applies_to(entry, cfg):
            continue   # not tuned (or tuned on another pair): the benchmark's values
        if term.weight is None and entry.get("weight") is not None:
            term.weight = float(entry["weight"])
        for name, value in (entry.get("params") or {}).items():
            term.params.setdefault(name, value)
    entry = tuned_entry(cfg.dataset, "schemes", cfg.scheme)
    if entry is not None and applies_to(entry, cfg):
        for name, value in (entry.get("params") or {}).items():
            cfg.scheme_params.setdefault(name, value)


def _already_filled(cfg) -> bool:
    """Whether a tuned pass has already filled `cfg`: every method has its weight, or a methodless scheme run
    has its scheme parameters (a fresh config asking for tuned values has neither)."""
    if cfg.methods:
        return all(term.weight is not None for term in cfg.methods)
    return bool(cfg.scheme_params)


def defaults_label(cfg) -> str:
    """What the Train form shows beside its tuned/benchmark select box for `cfg` (a RunConfig or its dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    dataset, scheme = get("dataset", "digits"), get("scheme", "offline") or "offline"
    keys = [m if isinstance(m, str) else (m["key"] if isinstance(m, dict) else m.key) for m in (get("methods") or [])]
    data = load_tuned(dataset)
    if data is None or not has_tuned(dataset, keys, scheme, cfg):
        return (f"benchmark: the published defaults (no tuned defaults for {dataset} and these settings; "
                f"`kd-explorer tune {(keys or [scheme])[0]} --dataset {dataset}` makes them)")
    parts = []
    for kind, names in (("methods", keys), ("schemes", [scheme])):
        for k in names:
            e = (data.get(kind) or {}).get(k)
            if e is not None and applies_to(e, cfg):
                vals = ([f"weight {_fmt(e['weight'])}"] if e.get("weight") is not None else []) + \
                       [f"{n} {_fmt(v)}" for n, v in (e.get("params") or {}).items()]
                parts.append(f"{k}: {', '.join(vals) or 'as published'}")
    return f"tuned on {dataset}'s validation split ({data.get('updated', '?')}): " + "; ".join(parts)


def defaults_choices(cfg) -> list[str]:
    """The select box's options: tuned first where the dataset has tuned values for these settings."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    keys = [m if isinstance(m, str) else (m["key"] if isinstance(m, dict) else m.key) for m in (get("methods") or [])]
    found = has_tuned(get("dataset", "digits"), keys, get("scheme", "offline") or "offline", cfg)
    return ["tuned", "benchmark"] if found else ["benchmark"]


def effective_values(dataset: str, kind: str, key: str, defaults: str | None = None, cfg=None) -> dict:
    """{"weight", "params"}: what a run gets for a method or scheme left unset, under `defaults` (None: tuned where
    there is an entry) -- the benchmark's values with the tuned ones on top. For the form's widgets' defaults;
    given the run's `cfg`, an entry tuned on another pair is left out, as apply_defaults leaves it out."""
    if kind == "methods":
        from .kd import get_method as get
    else:
        from .schemes import get_scheme as get
    cls = get(key)
    out = {"weight": getattr(cls, "default_weight", None) if kind == "methods" else None,
           "params": {h.name: h.default for h in cls.hparams}}
    entry = tuned_entry(dataset, kind, key) if defaults != "benchmark" else None
    if entry is not None and (cfg is None or applies_to(entry, cfg)):
        out["weight"] = entry.get("weight") if entry.get("weight") is not None else out["weight"]
        out["params"].update(entry.get("params") or {})
    return out


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else str(v)


# ------------------------------------------------------------------ writing (tune.py calls this)
def save_entries(dataset: str, kind: str, entries: dict, protocol: str, date: str,
                 folder: str | Path | None = None) -> Path:
    """Merge `entries` ({key: entry}) into the dataset's tuned file (locked: tuners may run side by side)."""
    import fcntl
    import hashlib
    import tempfile
    path = tuned_path(dataset, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_name = f"kd-explorer-tuned-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:   # beside nothing the repo keeps
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_file(path) if path.is_file() else {"schema": SCHEMA, "dataset": dataset}
        data.update(schema=SCHEMA, dataset=dataset, updated=date, protocol=protocol)
        data.setdefault(kind, {}).update(entries)
        for k in KINDS:
            data.setdefault(k, {})
        validate(data, str(path))
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120))
        tmp.replace(path)
    _CACHE.pop(str(path), None)
    return path


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):   # write every value out: no &id001 anchors in a file people read
        return True


HEADER = ("# Tuned defaults, written by `kd-explorer tune` (explorer/tune.py): each entry's values, the benchmark's\n"
          "# values it replaces and every trial behind it (validation accuracy per seed). Never measured on test.\n")
