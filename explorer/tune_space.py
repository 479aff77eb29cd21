"""What `kd-explorer tune` searches for each method and scheme (explorer/tune.py runs it): the weight and the main
hyperparameter, their candidates in order (the benchmark's values first), the rungs of the successive halving,
and the pair a key needs where the dataset's default pair refuses it.

    candidates("at")   # [{"weight": 1000.0, "params": {"p": 2}}, {"weight": 100.0, ...}, ...]
"""
from __future__ import annotations

import json
import math

from .config import WEIGHT
from .errors import ConfigError

# key -> (what the weight is, its main hyperparameter). For a method the weight is its term's weight ("@");
# for a scheme it is one of its own hyperparameters (or None). None as the hyperparameter: the weight only.
SPACE_METHODS = {
    "kd": "temperature", "dist": "temperature", "dkd": "beta", "ctkd": "t_max", "mlkd": "temperature",
    "nkd": "temperature", "gkd": "beta", "rkl": "temperature", "wttm": "gamma", "fitnet": "hint_stage",
    "at": "p", "fsp": "init_fraction", "nst": None, "ft": "rate", "kdsvd": "k", "ab": "margin", "ofd": None,
    "vid": "init_var", "reviewkd": "warmup", "simkd": "factor", "catkd": "resolution", "pkt": None,
    "cc": "gamma", "irg": None, "rkd": None, "sp": None, "crd": "nce_t", "minilm": None, "ofa": "eps",
}
SPACE_SCHEMES = {
    "dml": ("kl_weight", "temperature"), "one": (None, "temperature"),
    "kdcl": ("kd_weight", "temperature"), "byot": ("alpha", "temperature"), "cskd": ("lam", "temperature"),
    "tfkd": ("multiplier", "correct_prob"), "pskd": (None, "alpha_T"),
    "mtkd_avg": ("kd_weight", "temperature"), "adversarial": ("adv_weight", None),
    "dafl": ("ie_weight", "g_lr"), "deepinversion": ("bn_weight", "lr"), "camkd": ("kd_weight", "temperature"),
    "deit": ("alpha", "tau"), "minillm": ("lm_coef", "alpha"),
}
# schemes with no value of their own to search, and why (the tuned file records the reason as `not_tuned`)
NOTHING_OF_ITS_OWN = {
    "takd": "its settings are the assistant's architecture (auto: the zoo model nearest the geometric mean of the "
            "teacher's and student's sizes) and the assistant's epochs (0 = the run's): a model and a budget, not "
            "loss values; teacher -> assistant -> student each distil with the run's knowledge terms (kd), whose "
            "tuned values apply",
    "crossmodal": "its one setting, student_view (grayscale | edges | lowres), chooses the student's modality: the "
                  "experiment, not a value to search; the teacher's knowledge reaches the student through the run's "
                  "knowledge terms (kd), whose tuned values apply",
}
# keys the dataset's default pair refuses are tuned (and measured: benchmarks/bench_tuned_tables.py) on the pair
# their concept-map preset runs them on (explorer/presets.py method_preset / scheme_preset: FSP with cnn_tiny as
# its own teacher, MiniLM on a ViT pair, DeiT on its deit_tiny_p2 student); the entry records it as `pair`.
# what a run of a key fixes that is not the tuned values (the run's own fields), beside the pair
_NOT_PAIR = ("dataset", "epochs", "name", "scheme", "methods", "scheme_params")
# fields a pair may need at run time that are this machine's, not the entry's (the bundled teacher's file path)
_LOCAL = ("teacher_ckpt",)
WEIGHT_FACTORS = (1.0, 0.1, 10.0, 0.01)
# the order candidates are tried in: (weight factor index, hyperparameter index: 0 default, 1 halved, 2 doubled)
# weights first: on other data a published weight is what is most often off by an order of magnitude (AT's 1000 on
# 8x8 maps); the hyperparameter next, then the combinations
ORDER = ((0, 0), (1, 0), (3, 0), (0, 1), (2, 0), (0, 2), (1, 1), (1, 2), (3, 1), (3, 2), (2, 1), (2, 2))


def kind_of(key: str) -> str:
    from .kd import METHODS
    from .schemes import SCHEMES
    if key in METHODS:
        return "methods"
    if key in SCHEMES and key != "offline":
        return "schemes"
    from .spec import not_allowed
    raise ConfigError("tune", not_allowed(key, METHODS.list() + [s for s in SCHEMES.list() if s != "offline"]))


def pair_for(key: str, dataset: str) -> dict:
    """The run-config fields `key` needs on `dataset` beyond its default pair ({} where the default pair runs it):
    what its concept-map preset changes from the default preset (explorer/presets.py owns that choice), on the
    default preset's dataset."""
    from .presets import DEFAULT_PRESET, get_preset, method_preset, scheme_preset
    base = get_preset(DEFAULT_PRESET)["config"]
    if dataset != base["dataset"]:
        return {}
    own = method_preset(key) if kind_of(key) == "methods" else scheme_preset(key)
    return {k: v for k, v in own.items() if k not in _NOT_PAIR and base.get(k) != v}


def portable(pair: dict) -> dict:
    """The pair as the tuned file records it: without this machine's file paths."""
    return {k: v for k, v in pair.items() if k not in _LOCAL}


def space(key: str) -> tuple[str | None, str | None]:
    """(weight: "@" for a method's term weight, a scheme hyperparameter's name, or None; main hyperparameter)."""
    from .kd import get_method
    from .schemes import get_scheme
    if kind_of(key) == "methods":
        names = [h.name for h in get_method(key).hparams]
        main = SPACE_METHODS.get(key, _first_number(get_method(key).hparams))
        return "@", main if main in names else None
    if key in NOTHING_OF_ITS_OWN:
        return None, None
    hp = {h.name for h in get_scheme(key).hparams}
    w, main = SPACE_SCHEMES.get(key, (None, _first_number(get_scheme(key).hparams)))
    return (w if w in hp else None), (main if main in hp else None)


def _hparam_specs(key: str):
    from .kd import get_method
    from .schemes import get_scheme
    return (get_method(key) if kind_of(key) == "methods" else get_scheme(key)).hparams


def _first_number(hparams) -> str | None:
    return next((h.name for h in hparams if h.kind in ("int", "float")), None)


def _halved_doubled(spec) -> list:
    d = spec.default
    if spec.kind == "int":
        vals = [d - 1, d + 1]
    elif d:
        vals = [d / 2, d * 2]
    else:
        vals = [(spec.low or 0) + ((spec.high or 1) - (spec.low or 0)) * q for q in (0.25, 0.5)]
    lo = -math.inf if spec.low is None else spec.low
    hi = math.inf if spec.high is None else spec.high
    out = [min(max(v, lo), hi) for v in vals]
    return [round(v, 6) if isinstance(v, float) else v for v in out]


def candidates(key: str) -> list[dict]:
    """{weight, params} per candidate, the benchmark's values first; duplicates and refused values dropped."""
    from .kd import get_method
    from .schemes import get_scheme
    kind = kind_of(key)
    wname, main = space(key)
    specs = {h.name: h for h in (get_method(key) if kind == "methods" else get_scheme(key)).hparams}
    w_spec = WEIGHT if wname == "@" else specs.get(wname)
    w0 = get_method(key).default_weight if wname == "@" else (w_spec.default if w_spec is not None else None)
    weights = [None] if not w0 or w_spec is None else [
        min(max(w0 * f, w_spec.low or 0.0), w_spec.high if w_spec.high is not None else math.inf)
        for f in WEIGHT_FACTORS]
    hvals = [specs[main].default] + _halved_doubled(specs[main]) if main else [None]
    out, seen = [], set()
    for wi, hi in ORDER:
        if wi >= len(weights) or hi >= len(hvals):
            continue
        w, h = weights[wi], hvals[hi]
        if w is not None and not isinstance(w, int):
            w = float(f"{w:.6g}")
        params = {} if main is None else {main: h}
        if wname not in (None, "@") and w is not None:
            params[wname] = w
        cand = {"weight": w if wname == "@" else None, "params": params}
        sig = json.dumps(cand, sort_keys=True)
        if sig in seen or any(specs[n].problem(v) for n, v in params.items()):
            continue
        seen.add(sig)
        out.append(cand)
    return out


def rung_sizes(n_candidates: int, n_seeds: int, budget: int) -> list[int]:
    """How many candidates run on each seed: halving from the most that fit the budget (at least one)."""
    best = [1] * n_seeds
    for n0 in range(1, n_candidates + 1):
        sizes = [max(1, math.ceil(n0 / 2 ** r)) for r in range(n_seeds)]
        if sum(sizes) <= budget:
            best = sizes
    return best
