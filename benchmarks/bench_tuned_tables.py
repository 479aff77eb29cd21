"""The methods and schemes tables at the tuned defaults (data/tuned/<dataset>.yaml) AND at the benchmark's
published defaults, beside the student alone: mean ± std over seeds, a 95 % interval (Student t), the test
accuracy at the last epoch and at the epoch with the best validation accuracy.

    OMP_NUM_THREADS=1 python benchmarks/bench_tuned_tables.py --dataset digits --seeds 0,1,2,3,4 --csv runs.csv

Every run is recorded in --csv as it ends, and a rerun skips the rows already there, so a long measurement
can be stopped and continued; --table-only prints the Markdown tables from the CSV. Where a key's tuned values
are the benchmark's (the search kept them), its tuned rows are the benchmark runs (same config, same seeds).
A key the default pair refuses runs on the pair it was tuned on (explorer/tune.pair_for: FSP with the student's
own architecture as teacher, MiniLM and DeiT on ViT students), beside that pair's student alone (`none@<student>`).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIELDS = ["defaults", "kind", "key", "seed", "status", "last_test", "best_val_epoch", "best_test", "last_val",
          "seconds", "config"]


def per_epoch_trainer():
    from explorer.engine import Trainer
    from explorer.engine import loop, probe, setup

    class EpochTestTrainer(Trainer):
        """A run as any other, plus the student's test accuracy after each epoch (read-only: no RNG drawn)."""

        def _train(self, resume):
            state = setup.build(self, resume)
            self.epoch_test, orig = [], state.scheme.on_epoch_end

            def on_epoch_end(epoch):
                orig(epoch)
                model = next(iter(state.scheme.eval_models().values()))
                self.epoch_test.append(loop.evaluate(model, state.data, "test", self.config.batch_size * 4))
            state.scheme.on_epoch_end = on_epoch_end
            self.emit("start", values={"teacher_acc": state.teacher_acc, "device": str(state.device),
                                       "epochs": self.config.epochs, "n_train": len(state.data.train)})
            probe.maybe_capture(self, state, 0)
            return self._finish(state, loop.fit(self, state))
    return EpochTestTrainer


def alone_pair(pair: dict) -> dict:
    """The student-alone runs beside a key run on its own pair: the pair's student and recipe, no teacher. A DeiT
    student's alone run is its vit_* twin without the distillation token (as the DeiT preset compares it)."""
    out = {k: v for k, v in pair.items() if not k.startswith("teacher")}
    if str(out.get("student", "")).startswith("deit_"):
        out["student"] = "vit_" + out["student"][len("deit_"):]
    return out


def baseline_key(pair: dict) -> str:
    """"none" for the dataset's default student; "none@<student>" for a key run on another student."""
    student = alone_pair(pair).get("student")
    return f"none@{student}" if student else "none"


def run_one(defaults: str, kind: str, key: str, seed: int, dataset: str, store, epochs: int | None,
            pair: dict | None = None) -> dict:
    from explorer.errors import ConfigError, RunFailed
    cfg = dict(pair or {}, dataset=dataset, seed=seed, epochs=epochs, probe_size=0, checkpoint_every=0,
               defaults=defaults, name=f"tables-{defaults}-{key}-s{seed}")
    if key.startswith("none"):
        cfg["methods"] = []
    elif kind == "methods":
        cfg["methods"] = [key]
    else:
        cfg.update(scheme=key, methods=["kd"])   # as compare(): offline-style schemes distill with KD
    vals: list[float] = []
    t0 = time.time()
    row = dict(defaults=defaults, kind=kind, key=key, seed=seed)
    try:
        tr = per_epoch_trainer()(cfg, store, on_event=lambda e: vals.append(e.values["val/acc"])
                                 if e.kind == "epoch" else None)
        res = tr.run()
        stored = store.get_run(res["run_id"])["config"]
        row["config"] = json.dumps({k: stored[k] for k in ("defaults", "methods", "scheme", "scheme_params",
                                                           "ce_weight")})
        best = max(range(len(vals)), key=lambda i: (vals[i], -i))
        row.update(status=res["status"], last_test=res["test_acc"], best_val_epoch=best + 1,
                   best_test=tr.epoch_test[best], last_val=vals[-1])
    except (RunFailed, ConfigError) as e:
        row.update(status=f"failed: {str(e)[:150]}", config="")
    row["seconds"] = round(time.time() - t0, 1)
    return row


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def ci95(xs: list[float]) -> tuple[float, float, float]:
    from scipy import stats
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return m, sd, half


def cell(rows: list[dict], col: str) -> tuple[str, float | None]:
    xs = [100 * float(r[col]) for r in rows if r["status"] == "completed"]
    if not xs:
        if rows and all(r["status"].startswith("failed: config field") for r in rows):
            return "refused (does not run here)", None
        return ("failed: " + rows[0]["status"][8:60] if rows else "—"), None
    m, sd, half = ci95(xs)
    return f"{m:.2f} ± {sd:.2f} [{m - half:.1f}, {m + half:.1f}]" + (f" (n={len(xs)})" if len(xs) < 5 else ""), m


def values_cell(e: dict | None) -> str:
    """What the tuned defaults are for a key: its values, "as benchmark", or why it has none."""
    if e is None:
        return "not tuned"
    if e.get("not_tuned"):   # the reason in full: the search's table (--trials)
        return "not tuned: " + ("does not run here" if " does not run on " in e["not_tuned"] else
                                "nothing of its own to tune")
    if e.get("same_as_benchmark"):
        return "as benchmark"
    return ", ".join(([f"w={e['weight']:.3g}"] if e.get("weight") is not None else [])
                     + [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in e["params"].items()])


def compact(rows: list[dict], dataset: str) -> str:
    """The README's form: one row per key, mean ± std of the four numbers (intervals: docs/tuning.md)."""
    from explorer.tune_space import pair_for
    from explorer.tuned import tuned_entry
    out = []
    for kind in ("methods", "schemes"):
        keys = list(dict.fromkeys(r["key"] for r in rows if r["kind"] == kind and not r["key"].startswith("none")))
        pairs = {k: pair_for(k, dataset) for k in keys}
        out.append(f"\n**{kind.capitalize()} on {dataset}** (test accuracy %, mean ± std over 5 seeds; last epoch / "
                   "epoch of best validation accuracy; 95 % intervals and the search's trials: docs/tuning.md)\n")
        out.append("| key | tuned values | benchmark defaults: last / best-val | tuned: last / best-val | Δ tuned |")
        out.append("|---|---|---|---|---|")
        shown_base = ["none"] + [b for b in dict.fromkeys(baseline_key(p) for p in pairs.values()) if b != "none"]
        for b in shown_base:
            alone = [r for r in rows if r["key"] == b]
            if alone:
                label = "student alone" if b == "none" else f"{b[5:]} alone"
                out.append(f"| {label} | — | {short(alone, 'last_test')} / {short(alone, 'best_test')} | | |")
        refused = []
        for k in keys:
            b = [r for r in rows if r["key"] == k and r["defaults"] == "benchmark"]
            t = [r for r in rows if r["key"] == k and r["defaults"] == "tuned"]
            if b and cell(b, "last_test")[0].startswith("refused"):
                refused.append(k)
                continue
            ref = cell([r for r in rows if r["key"] == baseline_key(pairs[k])], "last_test")[1]
            e = tuned_entry(dataset, kind, k)
            if e is not None and e.get("not_tuned"):   # its runs get the benchmark's values
                t = b
            tm = cell(t, "last_test")[1]
            shown = {f: v for f, v in pairs[k].items() if f in ("teacher", "student")}
            label = k + (f" ({', '.join(f'{f} {v}' for f, v in shown.items())})" if shown else "")
            tuned = f"{short(t, 'last_test')} / {short(t, 'best_test')}"
            if t is b:   # not tuned: its runs are the benchmark rows (or refused, like them)
                tuned = "= benchmark" if cell(b, "last_test")[1] is not None else "—"
            out.append(f"| {label} | {values_cell(e)} | {short(b, 'last_test')} / {short(b, 'best_test')} | "
                       f"{tuned} | "
                       f"{'—' if tm is None or ref is None else f'{tm - ref:+.1f}'} |")
        if refused:
            out.append(f"\n{', '.join(refused)}: refused on {dataset} (they need another kind of data; see "
                       "docs/tuning.md).")
    return "\n".join(out)


def short(rows: list[dict], col: str) -> str:
    xs = [100 * float(r[col]) for r in rows if r["status"] == "completed"]
    if not xs:
        return "refused" if rows else "—"
    m, sd, _ = ci95(xs)
    return f"{m:.1f} ± {sd:.1f}" + (f" (n={len(xs)})" if len(xs) < 5 else "")


def trials_table(dataset: str) -> str:
    """What the search tried, from data/tuned/<dataset>.yaml: per key the chosen values, the validation accuracy of
    those and of the benchmark's, every trial (validation accuracy % per seed), and any pair or reason."""
    from explorer.tuned import load_tuned
    data = load_tuned(dataset)
    if data is None:
        return f"(no data/tuned/{dataset}.yaml)"
    out = [f"\n**What the search tried on {dataset}** (validation accuracy %, or perplexity where marked ppl, per "
           f"seed; from data/tuned/{dataset}.yaml)"
           "\n", "| kind | key | chosen | val chosen | val benchmark values | trials (values: val per seed) |",
           "|---|---|---|---|---|---|"]
    for kind in ("methods", "schemes"):
        for key, e in data.get(kind, {}).items():
            if e.get("not_tuned"):
                out.append(f"| {kind[:-1]} | {key} | not tuned | — | — | {e['not_tuned'].replace('|', '/')} |")
                continue
            desc = lambda t: " ".join(([f"w={t['weight']:.3g}"] if t.get("weight") is not None else []) + [
                f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in t["params"].items()]) or "—"
            m = e["protocol"].get("score", "val_acc")   # text datasets: validation perplexity
            fmt = (lambda v: f"{100 * v:.1f}") if m == "val_acc" else (lambda v: f"ppl {v:.2f}")
            trials = "; ".join(f"{desc(t)}: " + "/".join("failed" if a is None else fmt(a) for a in t[m].values())
                               for t in e["trials"])
            pair = e.get("pair")
            label = key + (f" ({', '.join(f'{f} {v}' for f, v in pair.items())})" if pair else "")
            out.append(f"| {kind[:-1]} | {label} | {'as benchmark' if e['same_as_benchmark'] else desc(e)} | "
                       f"{fmt(e[m])} | {fmt(e['benchmark'][m])} | {trials} |")
    return "\n".join(out)


def tables(rows: list[dict], dataset: str) -> str:
    from explorer.tune_space import pair_for
    from explorer.tuned import tuned_entry
    out = []
    base = {}   # baseline key -> (last-epoch mean, its row's cells)
    for b in dict.fromkeys(r["key"] for r in rows if r["key"].startswith("none")):
        alone = [r for r in rows if r["key"] == b]
        label = "none (student alone)" if b == "none" else f"{b} ({b[5:]} alone, at its pair's recipe)"
        base[b] = (cell(alone, "last_test")[1],
                   f"| {label} | — | {cell(alone, 'last_test')[0]} | {cell(alone, 'best_test')[0]} | | | | |")
    for kind in ("methods", "schemes"):
        keys = list(dict.fromkeys(r["key"] for r in rows if r["kind"] == kind and not r["key"].startswith("none")))
        out.append(f"\n**{kind.capitalize()}** ({dataset}, test accuracy %, mean ± std [95 % interval]; "
                   "last epoch | epoch of best validation accuracy; Δ = last-epoch mean − the same student alone)\n")
        out.append("| key | tuned values | benchmark: last | benchmark: best-val epoch | tuned: last | "
                   "tuned: best-val epoch | Δ tuned | Δ benchmark |")
        out.append("|---|---|---|---|---|---|---|---|")
        pairs = {k: pair_for(k, dataset) for k in keys}
        for b in base:
            if b == "none" or any(baseline_key(p) == b for p in pairs.values()):
                out.append(base[b][1])
        for k in keys:
            b = [r for r in rows if r["key"] == k and r["defaults"] == "benchmark"]
            t = [r for r in rows if r["key"] == k and r["defaults"] == "tuned"]
            ref = base.get(baseline_key(pairs[k]), (None,))[0]
            shown = {f: v for f, v in pairs[k].items() if f in ("teacher", "student")}
            label = k + (f" ({', '.join(f'{f} {v}' for f, v in shown.items())})" if shown else "")
            bl, bm = cell(b, "last_test")
            tl, tm = cell(t, "last_test")
            d = lambda m: "—" if m is None or ref is None else f"{m - ref:+.2f}"
            out.append(f"| {label} | {values_cell(tuned_entry(dataset, kind, k))} | {bl} | {cell(b, 'best_test')[0]} "
                       f"| {tl} | {cell(t, 'best_test')[0]} | {d(tm)} | {d(bm)} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=int, default=10, help="the app's digits presets: 10 (0: the dataset's recipe)")
    p.add_argument("--defaults", default="benchmark,tuned")
    p.add_argument("--keys", help="comma-separated methods/schemes (default: all)")
    p.add_argument("--csv", default="bench-tuned-tables.csv")
    p.add_argument("--home", help="KD_EXPLORER_HOME for the runs (default: the usual store)")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--readme", action="store_true", help="with --table-only: the README's compact tables")
    p.add_argument("--trials", action="store_true", help="with --table-only: the search's trials, from the tuned file")
    a = p.parse_args(argv)
    a.epochs = a.epochs or None
    if a.home:
        os.environ["KD_EXPLORER_HOME"] = a.home
    from explorer.kd import list_methods
    from explorer.schemes import list_schemes
    from explorer.store import Store
    from explorer.tune_space import pair_for
    from explorer.tuned import tuned_entry
    path = Path(a.csv)
    if not a.table_only:
        store = Store()
        seeds = [int(s) for s in a.seeds.split(",")]
        wanted = a.keys.split(",") if a.keys else list_methods() + [s for s in list_schemes() if s != "offline"]
        keys = [("methods" if k in list_methods() else "schemes", k) for k in wanted if not k.startswith("none")]
        pairs = {key: pair_for(key, a.dataset) for _, key in keys}
        alone = {"none": {}, **{baseline_key(p): alone_pair(p) for p in pairs.values()}}
        keys = [("methods", b) for b in alone] + keys
        for kind, key in keys:   # key by key, so each key's benchmark and tuned rows finish together
            pair = alone[key] if key.startswith("none") else pairs[key]
            for defaults in a.defaults.split(","):
                if key.startswith("none") and defaults != "benchmark":
                    continue
                entry = tuned_entry(a.dataset, kind, key) if defaults == "tuned" else None
                if defaults == "tuned" and (entry is None or entry.get("not_tuned")):
                    continue   # not tuned (yet, or nothing to tune): only its benchmark row
                for seed in seeds:
                    done = {(r["defaults"], r["key"], r["seed"]) for r in read_rows(path)}
                    if (defaults, key, str(seed)) in done:
                        continue
                    if entry is not None and entry.get("same_as_benchmark") and ("benchmark", key, str(seed)) in done:
                        row = dict(next(r for r in read_rows(path) if (r["defaults"], r["key"], r["seed"])
                                        == ("benchmark", key, str(seed))), defaults="tuned")
                    else:
                        row = run_one(defaults, kind, key, seed, a.dataset, store, a.epochs, pair)
                    new = not path.is_file()
                    with open(path, "a", newline="") as f:
                        w = csv.DictWriter(f, FIELDS)
                        if new:
                            w.writeheader()
                        w.writerow(row)
                    print(f"{defaults:<9} {key:<14} seed {seed}: last {row.get('last_test')} best-val-epoch "
                          f"{row.get('best_test')} ({row['seconds']} s) {row['status']}", file=sys.stderr, flush=True)
    if a.readme or a.trials:
        print(compact(read_rows(path), a.dataset) if a.readme else trials_table(a.dataset))
        return 0
    print(tables(read_rows(path), a.dataset))
    print(f"\nReproduce: OMP_NUM_THREADS=1 python benchmarks/bench_tuned_tables.py --dataset {a.dataset} "
          f"--seeds {a.seeds} --epochs {a.epochs} --csv {a.csv}  (tuned values: data/tuned/{a.dataset}.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
