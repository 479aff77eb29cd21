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


# methods the default preset's pair refuses, and the pair each runs on there (the concept map's button, and
# `kd-explorer tune`'s pair: explorer/tune_space.py). FSP's C x C matrices need equal channels: the default student's
# own architecture as its teacher (trained once by the teacher recipe). MiniLM distils self-attention: a ViT pair
# with equal heads, at the DeiT preset's ViT recipe (AdamW, no pad-crop: see the DeiT preset below).
METHOD_PAIRS = {
    "fsp": {"teacher": "cnn_tiny"},
    "minilm": {"teacher": "vit_tiny_p2", "student": "vit_tiny_p2", "optimizer": "adamw", "lr": 2e-3,
               "weight_decay": 0.05, "batch_size": 32, "augment": False},
}


def method_preset(method: str) -> dict:
    """The default preset with one knowledge term swapped in (on the pair it needs, where the default's refuses
    it): what the concept map's buttons open."""
    from .kd import get_method
    info = get_method(method).describe()
    base = get_preset(DEFAULT_PRESET)["config"]
    return dict(base, **METHOD_PAIRS.get(method, {}), methods=[{"key": method}],
                name=f"{info['name']} on {base['dataset']}")


def scheme_preset(scheme: str) -> dict:
    """The default preset under another scheme (its knowledge terms kept only if the scheme uses them); a scheme
    that refuses it (DeiT needs a student with a distillation token, the text schemes a text dataset) starts
    from a preset of its own instead."""
    from .config import RunConfig
    from .errors import ConfigError
    from .recipes import resolve
    from .schemes import get_scheme
    info = get_scheme(scheme).describe()
    base = get_preset(DEFAULT_PRESET)["config"]
    config = dict(base, scheme=scheme, methods=base["methods"] if info["uses_methods"] else [])
    try:
        resolve(RunConfig.from_dict(config))
    except ConfigError:
        own = [p["config"] for p in list_presets() if p["config"].get("scheme") == scheme]
        if own:
            return dict(own[0], name=f"{info['name']} on {own[0]['dataset']}")
    return dict(config, name=f"{info['name']} on {config['dataset']}")


# DeiT (Touvron et al., ICML 2021) on digits: the bundled CNN teacher (cnn_large) -> a 35k-parameter ViT with a
# distillation token (deit_tiny_p2: 2x2 patches, 16 tokens), against the same ViT alone. AdamW (DeiT's optimiser,
# weight decay 0.05), batch 32, no pad-crop: a 1-pixel shift of an 8x8 digit changes every 2x2 patch and the
# tiny ViT then needs many more than 10 epochs (it is the CNN teacher that was trained with it). The teacher is
# read from its bundled file: with augmentation off its recipe hash differs, and it would be trained again.
# teacher_cache: without augmentation each image has one view, so the teacher runs in the first epoch only.
def _bundled_digits_teacher() -> str | None:
    from .recipes import default_teacher_recipe, recipe_hash
    from .teachers import bundled_path
    path = bundled_path(recipe_hash(default_teacher_recipe("digits")))
    return str(path) if path is not None else None


_DIGITS_TEACHER = _bundled_digits_teacher()
if _DIGITS_TEACHER is not None:
    register_preset(
        "deit-cnn-to-vit", "CNN teacher → ViT student (DeiT)",
        "The ViT learns the labels through its class token and the CNN teacher's predictions through its "
        "distillation token; at test time the two heads are averaged. Compare its test accuracy with the same "
        "ViT alone (measured over 3 seeds: about 90 % against 89 %, within one standard deviation: a small gain "
        "at best on digits), and the per-head accuracies (class_head, dist_head) in the run's summary. On "
        "Attention maps the probes hold each block's class-token attention and its rollout.",
        dict(_DIGITS, student="deit_tiny_p2", scheme="deit", methods=[], optimizer="adamw", lr=2e-3,
             weight_decay=0.05, batch_size=32, augment=False, teacher_ckpt=_DIGITS_TEACHER,
             teacher_cache=True),
        compare=dict(scheme="offline", student="vit_tiny_p2"), compare_label="ViT alone")


# Language models on the bundled corpus (pydoc, character tokens) with the bundled gpt_4x128 teacher -> gpt_1x32.
# No cross-entropy in the first: the two students learn from the teacher's distributions alone, so the two
# divergences are what differs. Sized to finish (both runs) in under a minute on 2 CPU cores (README).
_LM = dict(dataset="pydoc", n_train=1500, epochs=2, batch_size=64, optimizer="adamw")
register_preset(
    "lm-forward-vs-reverse-kl", "Forward vs reverse KL",
    "On Language models, the next-token distributions side by side: forward KL (kd at T = 1) makes the student cover "
    "every character the teacher finds likely, reverse KL lets it drop some (mode seeking): the reverse-KL "
    "student's mean entropy over the test text is lower (3.36 vs 3.64 nats, measured; the teacher's is 2.54) and "
    "its perplexity higher (34 vs 24). At this one-minute budget both students are still far from the teacher.",
    dict(_LM, ce_weight=0.0, methods=[{"key": "kd", "params": {"temperature": 1.0}}]),
    compare=dict(methods=[{"key": "rkl"}]), compare_label="reverse KL")
register_preset(
    "lm-seqkd", "Sequence-level KD",
    "The student learns the text the teacher writes (greedy continuations of 8-character prompts) instead of the "
    "corpus: compare its validation perplexity on the real text with the student trained on the corpus alone.",
    dict(_LM, scheme="seqkd", methods=[]), compare=dict(scheme="offline", methods=[]))
register_preset(
    "lm-onpolicy", "On-policy (GKD)",
    "Half the batches are the student's own samples scored by the teacher with the JSD at beta 0.5 (GKD's "
    "lambda = 0.5); the comparison trains on the corpus only (lambda = 0): the on-policy student makes fewer "
    "of its own mistakes, the gap shows in the teacher agreement and in its samples.",
    dict(_LM, scheme="onpolicy", scheme_params={"lmbda": 0.5}, methods=[{"key": "gkd", "params": {"beta": 0.5}}]),
    compare=dict(scheme="offline", scheme_params={}), compare_label="off-policy GKD (lambda = 0)")
register_preset(
    "lm-minillm", "MiniLLM (policy gradient)",
    "The student samples text (mixed with the teacher at alpha = 0.2) and is rewarded by the teacher's log-probability "
    "of it: in the run's epoch metrics the reverse KL at its sampled positions falls (about 1.44 to 0.75 nats over the "
    "two epochs) and the mean reward rises towards 0 (-0.93 to -0.48). Compare with the token-level reverse KL (rkl): "
    "both seek modes and pay for it in perplexity at this budget (validation 25.2 vs 26.9, student alone 23.0).",
    dict(_LM, scheme="minillm", methods=[]), compare=dict(scheme="offline", methods=[{"key": "rkl"}]),
    compare_label="token-level reverse KL (rkl)")


# ViT teacher -> ViT student on shapes (object masks known: the Attention page scores each rollout inside the
# object). No ViT teacher is bundled: the first run trains vit_small_p4 for teacher_epochs once and records it as a
# run; later runs of the preset (and any run with the same teacher recipe) reuse it (timings in the README).
register_preset(
    "vit-attention", "ViT attention: teacher vs student",
    "On Attention maps, under Transformer attention: the teacher's and the student's attention rollout side by side "
    "at any recorded epoch, and each block's class-token attention per head. Look for the distilled student's "
    "rollout moving onto the object over the epochs (its share inside the mask rises towards the teacher's), "
    "and compare it with the same ViT trained alone.",
    dict(_SHAPES, teacher="vit_small_p4", teacher_epochs=10, student="vit_tiny_p4", epochs=20,
         optimizer="adamw", lr=2e-3, weight_decay=0.05, methods=[{"key": "kd"}]),
    compare=dict(methods=[]), compare_label="ViT alone")
