"""One-click experiments for the app: a registry of small dicts, each a run config plus what to look for.

    for p in list_presets(): print(p["key"], p["title"])
    configs = preset_configs("kd-vs-alone")     # [the run, the comparison run(s)...] as config dicts

A preset may name a comparison (`compare`: overrides applied to its config, e.g. the student trained
alone), so one click shows the gap the method closes. Presets whose scheme or methods are not in the
registries (yet) are hidden, never broken.
"""
from __future__ import annotations

import copy

# Digits with the bundled teacher: the default budget (all ~1.3k training images, 10 epochs of a
# 10k-parameter student) finishes in seconds on a laptop CPU and already shows a clear gap.
_DIGITS = dict(dataset="digits", epochs=10)

_PRESETS: dict[str, dict] = {}


def register_preset(key: str, title: str, look_for: str, config: dict, compare: dict | None = None,
                    compare_label: str = "student alone", needs_data_root: bool = False) -> dict:
    """needs_data_root: the preset's dataset is read from a folder the user names (preset_configs' data_root)."""
    if key in _PRESETS:
        raise ValueError(f"preset {key!r} registered twice")
    _PRESETS[key] = dict(key=key, title=title, look_for=look_for, config=config, compare=compare,
                         compare_label=compare_label, needs_data_root=needs_data_root)
    return _PRESETS[key]


register_preset(
    "kd-vs-alone", "KD vs student alone",
    "The distilled student's test accuracy lands between the student trained alone and the teacher: "
    "the teacher's soft targets closed part of the gap.",
    dict(_DIGITS, methods=[{"key": "kd"}]), compare=dict(methods=[]))
# Attention on the procedural shapes (32x32, object masks known; bundled resnet20 teacher -> resnet8): on 8x8
# digits the deepest maps are 2x2 and say nothing. 1,000 training images, 10 epochs of batch 32 finish in about a
# minute on 2 CPU cores. AT at the CIFAR benchmark's weight (1000: these maps are CIFAR's 32x32) on top of KD.
_SHAPES = dict(dataset="shapes", n_train=1000, epochs=10, batch_size=32)
register_preset(
    "attention", "Attention transfer",
    "On Attention maps, \"Attention inside the object\" puts a number on where each model looks: in the "
    "deepest stage the distilled student puts as much of its attention on the object as the teacher (about "
    "0.44 of it; chance, the mask's area, is 0.17), the student trained alone less (about 0.39).",
    dict(_SHAPES, methods=[{"key": "kd"}, {"key": "at", "weight": 1000.0}]), compare=dict(methods=[]))
register_preset(
    "relational", "Relational KD",
    "On Relation matrices the student's sample-to-sample similarities take the teacher's block "
    "structure (a higher Pearson r than the student trained alone).",
    dict(_DIGITS, methods=[{"key": "rkd"}]), compare=dict(methods=[]))
register_preset(
    "online-dml", "Online: DML",
    "No pretrained teacher: two peers teach each other from scratch; each ends better than it would alone.",
    dict(_DIGITS, scheme="dml", methods=[]), compare=dict(scheme="offline", methods=[]))
register_preset(
    "self-byot", "Self-KD: BYOT",
    "The network is its own teacher: its deepest section distils into the shallower ones; compare the "
    "final accuracy with the same student trained alone.",
    dict(_DIGITS, scheme="byot", methods=[]), compare=dict(scheme="offline", methods=[]))

# The CIFAR-100 benchmark protocol (the CRD recipe, explorer/bench/protocol.py): for a GPU and the data
# (`kd-explorer download cifar100 FOLDER`); other pairs and methods: `kd-explorer bench protocol`.
from .bench.protocol import config as _protocol_config   # noqa: E402

register_preset(
    "cifar100-protocol", "CIFAR-100 benchmark protocol: KD, resnet32x4 → resnet8x4",
    "The CRD benchmark's recipe (240 epochs, batch 64, lr 0.05 ×0.1 at 150/180/210, weight decay 5e-4), its "
    "teacher trained by the same recipe: the student's last-epoch accuracy lines up with the published 73.33 % "
    "(Benchmark page). Needs a GPU (hours on a CPU) and the CIFAR-100 folder.",
    _protocol_config("resnet32x4:resnet8x4", "kd"), compare=dict(methods=[]), needs_data_root=True)

DEFAULT_PRESET = "kd-vs-alone"


def _available(p: dict) -> bool:
    from .kd import list_methods
    from .schemes import list_schemes
    cfg = p["config"]
    methods = [m["key"] if isinstance(m, dict) else m for m in cfg.get("methods", [])]
    return cfg.get("scheme", "offline") in list_schemes() and all(m in list_methods() for m in methods)


def list_presets(with_data_root: bool = False) -> list[dict]:
    """The presets the current registries can run, default first; those that need a data folder only when
    asked (with_data_root: the Benchmark page, which asks for the folder)."""
    return [copy.deepcopy(p) for p in _PRESETS.values()
            if _available(p) and (with_data_root or not p.get("needs_data_root"))]


def get_preset(key: str) -> dict:
    if key not in _PRESETS or not _available(_PRESETS[key]):
        raise KeyError(f"unknown preset {key!r}; choose one of: "
                       f"{', '.join(p['key'] for p in list_presets(with_data_root=True))}")
    return copy.deepcopy(_PRESETS[key])


def preset_configs(key: str, data_root: str | None = None) -> list[dict]:
    """The run config of a preset, then its comparison run's config (if any), named for the Runs table.
    A preset that needs a data folder takes it here (ValueError without one)."""
    p = get_preset(key)
    main = dict(p["config"], name=p["title"])
    if p.get("needs_data_root") and not data_root:
        raise ValueError(f"preset {key!r} reads {main['dataset']} from a folder: name it (data_root / --data-root)")
    if data_root:
        main["data_root"] = data_root
    out = [main]
    if p["compare"] is not None:
        out.append(dict(main, **p["compare"], name=f"{p['title']} · {p['compare_label']}"))
    return out


def method_preset(method: str) -> dict:
    """The default preset with one knowledge term swapped in: what the concept map's buttons open."""
    from .kd import get_method
    info = get_method(method).describe()
    return dict(get_preset(DEFAULT_PRESET)["config"], methods=[{"key": method}], name=f"{info['name']} on digits")


def scheme_preset(scheme: str) -> dict:
    """The default preset under another scheme (its knowledge terms kept only if the scheme uses them)."""
    from .schemes import get_scheme
    info = get_scheme(scheme).describe()
    base = get_preset(DEFAULT_PRESET)["config"]
    return dict(base, scheme=scheme, methods=base["methods"] if info["uses_methods"] else [],
                name=f"{info['name']} on digits")
