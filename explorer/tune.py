"""`kd-explorer tune`: a method's (or scheme's) weight and main hyperparameter, chosen on a validation split
carved from the training data -- never on the test split -- and written with the trials behind them to
data/tuned/<dataset>.yaml, which recipes.resolve then uses as the dataset's defaults (`defaults: tuned`).

    kd-explorer tune at --dataset digits --budget 6 --seeds 0,1

Protocol. Every trial is an ordinary run at the dataset's recipe (same training rows, epochs, teacher) on a
*validation view* of the dataset: its evaluation split is the validation rows the engine holds out of the
training split (data/loader.py: 10 %, stratified, split seed 0), and the real test split is never read -- not
even loaded. The score is the validation accuracy at the last epoch, averaged over the seeds a candidate ran.
Candidates: the benchmark's values first, then the weight x 0.1, x 0.01 (log scale), the main hyperparameter
halved, the weight x 10, the hyperparameter doubled, then their combinations (SPACE names it per method/scheme). Successive halving: every candidate on
the first seed, the better half on the next seed, and so on; `--budget` runs in all per key.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from datetime import date

from .config import WEIGHT
from .errors import ConfigError

# key -> (what the weight is, its main hyperparameter). For a method the weight is its term's weight ("@");
# for a scheme it is one of its own hyperparameters (or None). None as the hyperparameter: the weight only.
SPACE_METHODS = {
    "kd": "temperature", "dist": "temperature", "dkd": "beta", "ctkd": "t_max", "mlkd": "temperature",
    "nkd": "temperature", "gkd": "beta", "rkl": "temperature", "wttm": "gamma", "fitnet": "hint_stage",
    "at": "p", "fsp": None, "nst": None, "ft": "rate", "kdsvd": "k", "ab": "margin", "ofd": None,
    "vid": "init_var", "reviewkd": "warmup", "simkd": "factor", "catkd": "resolution", "pkt": None,
    "cc": "gamma", "irg": None, "rkd": None, "sp": None, "crd": "nce_t", "minilm": None, "ofa": "eps",
}
SPACE_SCHEMES = {
    "takd": (None, None), "dml": ("kl_weight", "temperature"), "one": (None, "temperature"),
    "kdcl": ("kd_weight", "temperature"), "byot": ("alpha", "temperature"), "cskd": ("lam", "temperature"),
    "tfkd": ("multiplier", "correct_prob"), "pskd": (None, "alpha_T"), "crossmodal": (None, None),
    "mtkd_avg": ("kd_weight", "temperature"), "adversarial": ("adv_weight", None),
    "dafl": ("ie_weight", "g_lr"), "deepinversion": ("bn_weight", "lr"), "camkd": ("kd_weight", "temperature"),
    "deit": ("alpha", "tau"),
}
WEIGHT_FACTORS = (1.0, 0.1, 10.0, 0.01)
# the order candidates are tried in: (weight factor index, hyperparameter index: 0 default, 1 halved, 2 doubled)
# weights first: on other data a published weight is what is most often off by an order of magnitude (AT's 1000 on
# 8x8 maps); the hyperparameter next, then the combinations
ORDER = ((0, 0), (1, 0), (3, 0), (0, 1), (2, 0), (0, 2), (1, 1), (1, 2), (3, 1), (3, 2), (2, 1), (2, 2))
PROTOCOL = ("validation split: the 10 % of the training split the engine holds out (stratified, split seed 0); "
            "the test split is never loaded. Score: validation accuracy at the last epoch, mean over the seeds "
            "run. Search: successive halving over the benchmark values, the weight x0.1/x0.01/x10 (log scale) "
            "and the main hyperparameter halved/doubled, in that order; each entry's `protocol` has its budget and seeds.")


def kind_of(key: str) -> str:
    from .kd import METHODS
    from .schemes import SCHEMES
    if key in METHODS:
        return "methods"
    if key in SCHEMES and key != "offline":
        return "schemes"
    from .spec import not_allowed
    raise ConfigError("tune", not_allowed(key, METHODS.list() + [s for s in SCHEMES.list() if s != "offline"]))


def space(key: str) -> tuple[str | None, str | None]:
    """(weight: "@" for a method's term weight, a scheme hyperparameter's name, or None; main hyperparameter)."""
    from .kd import get_method
    from .schemes import get_scheme
    if kind_of(key) == "methods":
        names = [h.name for h in get_method(key).hparams]
        main = SPACE_METHODS.get(key, _first_number(get_method(key).hparams))
        return "@", main if main in names else None
    hp = {h.name for h in get_scheme(key).hparams}
    w, main = SPACE_SCHEMES.get(key, (None, _first_number(get_scheme(key).hparams)))
    return (w if w in hp else None), (main if main in hp else None)


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


# ------------------------------------------------------------------ the validation view of a dataset
@contextlib.contextmanager
def validation_view(dataset: str):
    """The name of `<dataset>~val` (explorer/data/validation.py): the same training rows (the engine carves the
    same validation rows again), its "test" split = those validation rows; its cached read is dropped afterwards."""
    from .data import get_dataset_spec
    from .data.validation import view_name
    get_dataset_spec(dataset)   # an unknown dataset is named as such
    try:
        yield view_name(dataset)
    finally:
        from .data.loader import _read_cached
        _read_cached.cache_clear()


def _teacher_ckpt(cfg: dict, store) -> str | None:
    """The weights a real run of `cfg` gets as its teacher (bundled, a recorded run, a file), so every trial uses
    the very teacher the tuned defaults will be used with; None: none yet (trained once on the view)."""
    from . import teachers
    from .recipes import resolve
    from .schemes import get_scheme
    rcfg = resolve(dict(cfg))
    if not get_scheme(rcfg.scheme).needs_teacher:
        return None
    ref = teachers.locate(store, rcfg)
    return None if ref.source == "train" else str(teachers.weights_path(ref, store))


def tune_key(key: str, dataset: str, seeds: list[int], budget: int, store, base: dict | None = None,
             log=print, executor: str | None = None, address: str | None = None) -> dict:
    """Tune one method or scheme; returns its tuned-file entry (values, benchmark values, trials). Each rung's
    trials are one grid for explorer.executors.run_many: here one after another, or at once on a Ray cluster."""
    from .executors import run_many
    kind = kind_of(key)
    base = dict(base or {}, dataset=dataset)
    if kind == "methods":
        base["methods"] = [{"key": key}]
    else:
        base.update(scheme=key, methods=["kd"])   # as the benchmark tables: offline-style schemes distill with KD
    cands = candidates(key)
    if len(cands) < 2:
        raise ConfigError("tune", f"{key!r} has no weight or numeric hyperparameter to tune here: its "
                          "knowledge terms' own tuned values apply")
    sizes = rung_sizes(len(cands), len(seeds), budget)
    ckpt = _teacher_ckpt(base, store)
    trials = [{"weight": c["weight"], "params": c["params"], "val_acc": {}} for c in cands[:sizes[0]]]
    t_key = time.time()
    done = 0
    with validation_view(dataset) as view:
        alive = trials
        for r, seed in enumerate(seeds):
            alive = sorted(alive, key=lambda t: -_score(t))[:sizes[r]] if r else alive
            configs = []
            for t in alive:
                cfg = dict(base, dataset=view, seed=seed, probe_size=0, checkpoint_every=0, defaults="benchmark",
                           name=f"tune-{key}-s{seed}")
                if ckpt is not None:
                    cfg["teacher_ckpt"] = ckpt
                if kind == "methods":
                    cfg["methods"] = [{"key": key, "weight": t["weight"], "params": dict(t["params"])}]
                else:
                    cfg["scheme_params"] = dict(t["params"])
                configs.append(cfg)
            t0 = time.time()
            for t, run_id in zip(alive, run_many(configs, executor=executor, address=address, store=store)):
                run = store.get_run(run_id)
                acc = (run.get("summary") or {}).get("val_acc") if run["status"] == "completed" else None
                res = {"status": run["status"] if acc is not None else f"{run['status']}: "
                       f"{(run.get('message') or '')[:120]}"}
                t["val_acc"][int(seed)] = None if acc is None else round(float(acc), 6)
                done += 1
                log(f"[tune {key} {done}/{sum(sizes)}] {_describe(t)} seed {seed}: val_acc="
                    f"{float('nan') if acc is None else acc:.4f} ({time.time() - t0:.1f} s for the rung so far)")
    if all(a is None for t in trials for a in t["val_acc"].values()):
        raise ConfigError("tune", f"every trial of {key!r} failed (last: {res.get('status')}); nothing was chosen")
    ranked = sorted([t for t in trials if len(t["val_acc"]) == len(seeds)] or trials, key=lambda t: -_score(t))
    best, bench = ranked[0], trials[0]
    for t in trials:
        t["mean"] = round(_score(t), 6)
    return {"weight": best["weight"], "params": best["params"], "val_acc": best["mean"],
            "benchmark": {"weight": bench["weight"], "params": bench["params"], "val_acc": bench["mean"]},
            "same_as_benchmark": best is bench,
            "protocol": {"budget": budget, "seeds": list(seeds), "runs": done, "rungs": sizes,
                         "epochs": base.get("epochs"), "n_train": base.get("n_train"), "date": str(date.today()),
                         "seconds": round(time.time() - t_key, 1)},
            "trials": trials}


def _score(t: dict) -> float:
    """Mean validation accuracy over the seeds run; a failed (diverged) seed counts as 0."""
    accs = [a or 0.0 for a in t["val_acc"].values()]
    return sum(accs) / len(accs) if accs else -1.0


def _describe(t: dict) -> str:
    parts = ([f"weight={t['weight']:.4g}"] if t["weight"] is not None else []) + \
            [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()]
    return " ".join(parts) or "(as published)"


def main(args) -> int:
    from .store import Store, default_home
    from .tuned import save_entries
    from .kd import list_methods
    from .schemes import list_schemes
    keys = args.keys
    if keys == ["all"]:
        keys = list_methods() + [s for s in list_schemes() if s != "offline"]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not seeds or args.budget < 1:
        raise ConfigError("tune", "needs at least one seed and a budget of at least 1 run")
    for k in keys:
        kind_of(k)
    store = Store(args.home or default_home() / "tune")   # trials stay out of the user's runs table
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    base = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train)) if v is not None}
    out = {}
    for k in keys:
        try:
            entry = tune_key(k, args.dataset, seeds, args.budget, store, base, log, getattr(args, "executor", None),
                             getattr(args, "address", None))
        except ConfigError as e:   # refused before it ran, e.g. FSP on unequal channels
            log(f"[tune {k}] not tuned: {e}")
            out[k] = {"error": str(e)}
            continue
        save_entries(args.dataset, kind_of(k), {k: entry}, PROTOCOL, str(date.today()), args.out_dir)
        out[k] = {"weight": entry["weight"], "params": entry["params"], "val_acc": entry["val_acc"],
                  "benchmark_val_acc": entry["benchmark"]["val_acc"]}
        log(f"[tune {k}] chose {_describe(entry)} (val {entry['val_acc']}; benchmark values: "
            f"{entry['benchmark']['val_acc']})")
    if args.json:
        print(json.dumps({"dataset": args.dataset, "results": out}))
    else:
        for k, v in out.items():
            print(f"{k:<14} " + (f"not tuned: {v['error']}" if "error" in v else
                                 f"{_describe(v)}  val_acc={v['val_acc']} (benchmark {v['benchmark_val_acc']})"))
    return 0


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="+", metavar="METHOD|SCHEME", help="what to tune (several, or all)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--budget", type=int, default=6, help="training runs per method or scheme (default 6)")
    p.add_argument("--seeds", default="0,1", help="comma-separated; successive halving runs one per rung")
    p.add_argument("--epochs", type=int, help="default: the dataset's recipe (tune at the budget you train at)")
    p.add_argument("--n-train", dest="n_train", type=int, help="a stratified subset of the training rows")
    p.add_argument("--out-dir", dest="out_dir", help="where <dataset>.yaml is written (default data/tuned/)")
    p.add_argument("--home", help="where the trials' runs are recorded (default <KD_EXPLORER_HOME>/tune)")
    p.add_argument("--executor", choices=("local", "ray"), help="where each rung's trials run: one after another "
                   "here (local, the default: KD_EXPLORER_EXECUTOR) or at once on a Ray cluster (docs/ray.md)")
    p.add_argument("--address", help="the Ray cluster (default KD_EXPLORER_RAY_ADDRESS, else a local one)")
