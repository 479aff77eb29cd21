"""`kd-explorer tune`: a method's (or scheme's) weight and main hyperparameter, chosen on a validation split
carved from the training data -- never on the test split -- and written with the trials behind them to
data/tuned/<dataset>.yaml, which recipes.resolve then uses as the dataset's defaults (`defaults: tuned`).

    kd-explorer tune at --dataset digits --budget 6 --seeds 0,1

Protocol. Every trial is an ordinary run at the dataset's recipe (same training rows, epochs, teacher) on a
*validation view* of the dataset: its evaluation split is the validation rows the engine holds out of the
training split (data/loader.py: 10 %, stratified, split seed 0), and the real test split is never read -- not
even loaded. The score is the validation accuracy at the last epoch, averaged over the seeds a candidate ran.
Candidates: the benchmark's values first, then the weight x 0.1, x 0.01 (log scale), the main hyperparameter
halved, the weight x 10, the hyperparameter doubled, then their combinations (explorer/tune_space.py names them
per method/scheme). Successive halving: every candidate on the first seed, the better half on the next seed, and so
on; `--budget` runs in all per key.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from datetime import date

from .errors import ConfigError
from .tune_space import NOTHING_OF_ITS_OWN, _hparam_specs, candidates, kind_of, pair_for, portable, rung_sizes

PROTOCOL = ("validation split: the 10 % of the training split the engine holds out (images: stratified, split seed "
            "0; text: the windows just before the test part, by position); the test split is never loaded. Score: "
            "validation accuracy at the last epoch (text: validation perplexity, lower is better), mean over the "
            "seeds run. Search: successive halving over the benchmark values, the weight x0.1/x0.01/x10 (log scale) "
            "and the main hyperparameter halved/doubled, in that order; each entry's `protocol` has its budget and seeds.")


class NotTunable(ConfigError):
    """Refused before any trial ran: the key has nothing of its own to tune, or does not run on this dataset.
    `kd-explorer tune` records the reason in the tuned file (`not_tuned`), so the file covers every key."""


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
    pair = pair_for(key, dataset)
    base = dict(base or {}, **pair, dataset=dataset)
    if kind == "methods":
        base["methods"] = [{"key": key}]
    else:
        base.update(scheme=key, methods=["kd"])   # as the benchmark tables: offline-style schemes distill with KD
    if key in NOTHING_OF_ITS_OWN:
        raise NotTunable("tune", f"{key!r} has nothing of its own to tune: {NOTHING_OF_ITS_OWN[key]}")
    cands = candidates(key)
    if len(cands) < 2:
        hps = ", ".join(h.name for h in _hparam_specs(key)) or "none"
        raise NotTunable("tune", f"{key!r} has no weight or numeric hyperparameter of its own to search (its "
                         f"hyperparameters: {hps}): the tuned values of the knowledge terms it runs apply")
    try:
        from .recipes import resolve
        resolve(dict(base))   # refused on this dataset or pair (a text scheme on images, FSP's channels): say why
    except ConfigError as e:
        raise NotTunable("tune", f"{key!r} does not run on {dataset} here: {e.detail}") from None
    from .data import get_dataset_spec
    metric = score_of(get_dataset_spec(dataset).modality)
    rank = lambda t: _rank(t, metric)   # noqa: E731
    sizes = rung_sizes(len(cands), len(seeds), budget)
    ckpt = _teacher_ckpt(base, store)
    trials = [{"weight": c["weight"], "params": c["params"], "val_acc": {}, **({metric: {}} if metric != "val_acc"
                                                                                else {})} for c in cands[:sizes[0]]]
    t_key = time.time()
    done = 0
    with validation_view(dataset) as view:
        alive = trials
        for r, seed in enumerate(seeds):
            alive = sorted(alive, key=rank)[:sizes[r]] if r else alive
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
                summary = (run.get("summary") or {}) if run["status"] == "completed" else {}
                acc = summary.get("val_acc")
                res = {"status": run["status"] if acc is not None else f"{run['status']}: "
                       f"{(run.get('message') or '')[:120]}"}
                for name in {"val_acc", metric}:   # a diverged run's perplexity (inf, nan) counts as failed
                    v = summary.get(name)
                    t[name][int(seed)] = round(float(v), 6) if v is not None and math.isfinite(v) else None
                done += 1
                log(f"[tune {key} {done}/{sum(sizes)}] {_describe(t)} seed {seed}: {metric}="
                    f"{float('nan') if t[metric][int(seed)] is None else t[metric][int(seed)]:.4f} "
                    f"({time.time() - t0:.1f} s for the rung so far)")
    if all(a is None for t in trials for a in t["val_acc"].values()):
        raise ConfigError("tune", f"every trial of {key!r} failed (last: {res.get('status')}); nothing was chosen")
    ranked = sorted([t for t in trials if len(t["val_acc"]) == len(seeds)] or trials, key=rank)
    best, bench = ranked[0], trials[0]
    for t in trials:
        t["mean"] = round(_score(t, metric), 6)
        if metric != "val_acc":
            t["mean_acc"] = round(_score(t, "val_acc"), 6)
    def scores(t):   # the chosen's and the benchmark's: accuracy always, and the score where it is another
        return {"val_acc": t.get("mean_acc", t["mean"]), **({metric: t["mean"]} if metric != "val_acc" else {})}
    entry = {"weight": best["weight"], "params": best["params"], **scores(best)}
    if pair:
        entry["pair"] = portable(pair)
    return {**entry,
            "benchmark": {"weight": bench["weight"], "params": bench["params"], **scores(bench)},
            "same_as_benchmark": best is bench,
            "protocol": {"score": metric, "budget": budget, "seeds": list(seeds), "runs": done, "rungs": sizes,
                         "epochs": base.get("epochs"), "n_train": base.get("n_train"), "date": str(date.today()),
                         "seconds": round(time.time() - t_key, 1)},
            "trials": trials}


def not_tuned_entry(reason: str) -> dict:
    """A tuned-file entry with no values: why the key is not tuned here (explorer/tuned.py never applies it)."""
    return {"weight": None, "params": {}, "not_tuned": reason,
            "protocol": {"date": str(date.today())}}


def score_of(modality: str) -> str:
    """What a trial is scored on: validation accuracy; on text, validation perplexity -- at the LM presets' budget
    (pydoc, 1,500 windows, 2 epochs) every student's top-1 token is still the corpus' most frequent character, so
    token accuracy ties every candidate (17.84 % each on pydoc) while perplexity separates them (35 vs 51)."""
    return "val_ppl" if modality == "text" else "val_acc"


def _score(t: dict, metric: str = "val_acc") -> float:
    """Mean of `metric` over the seeds run; a failed (diverged) seed counts as the worst: accuracy 0, perplexity
    infinite."""
    worst = math.inf if metric == "val_ppl" else 0.0
    vals = [worst if a is None else a for a in t[metric].values()]
    if not vals:
        return math.inf if metric == "val_ppl" else -1.0
    return sum(vals) / len(vals)


def _rank(t: dict, metric: str = "val_acc") -> float:
    """The sort key, best first: accuracy to 0.01 %, so accuracies equal but for the 6-decimal rounding of the
    per-seed values (131+133 vs 132+132 right of 142) tie -- and a tie keeps the earlier candidate, the benchmark's
    values first (one validation image is 0.7 % of digits' 142, far above that resolution); perplexity to 0.01."""
    if metric == "val_ppl":
        return round(_score(t, metric), 2)
    return -round(_score(t, metric), 4)


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
        except NotTunable as e:   # refused before it ran: recorded, so the file says why this key has no values
            log(f"[tune {k}] not tuned: {e.detail}")
            save_entries(args.dataset, kind_of(k), {k: not_tuned_entry(e.detail)}, PROTOCOL, str(date.today()),
                         args.out_dir)
            out[k] = {"error": e.detail}
            continue
        except ConfigError as e:   # every trial failed: nothing to record
            log(f"[tune {k}] not tuned: {e}")
            out[k] = {"error": str(e)}
            continue
        save_entries(args.dataset, kind_of(k), {k: entry}, PROTOCOL, str(date.today()), args.out_dir)
        out[k] = {"weight": entry["weight"], "params": entry["params"], "val_acc": entry["val_acc"],
                  "benchmark_val_acc": entry["benchmark"]["val_acc"]}
        m = entry["protocol"]["score"]
        log(f"[tune {k}] chose {_describe(entry)} ({m} {entry[m]}; benchmark values: {entry['benchmark'][m]})")
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
