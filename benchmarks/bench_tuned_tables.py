"""The methods and schemes tables at the tuned defaults (data/tuned/<dataset>.yaml) AND at the benchmark's
published defaults, beside the student alone: mean ± std over seeds, a 95 % interval (Student t), the test
accuracy at the last epoch and at the epoch with the best validation accuracy.

    OMP_NUM_THREADS=1 python benchmarks/bench_tuned_tables.py --dataset digits --seeds 0,1,2,3,4 --csv runs.csv

Every run is recorded in --csv as it ends, and a rerun skips the rows already there, so a long measurement
can be stopped and continued; --table-only prints the Markdown tables from the CSV. Where a key's tuned values
are the benchmark's (the search kept them), its tuned rows are the benchmark runs (same config, same seeds).
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


def run_one(defaults: str, kind: str, key: str, seed: int, dataset: str, store, epochs: int | None) -> dict:
    from explorer.errors import ConfigError, RunFailed
    cfg = dict(dataset=dataset, seed=seed, epochs=epochs, probe_size=0, checkpoint_every=0, defaults=defaults,
               name=f"tables-{defaults}-{key}-s{seed}")
    if key == "none":
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
        return ("failed: " + rows[0]["status"][8:60] if rows else "—"), None
    m, sd, half = ci95(xs)
    return f"{m:.2f} ± {sd:.2f} [{m - half:.1f}, {m + half:.1f}]" + (f" (n={len(xs)})" if len(xs) < 5 else ""), m


def tables(rows: list[dict], dataset: str) -> str:
    from explorer.tuned import tuned_entry
    out = []
    alone = [r for r in rows if r["key"] == "none"]
    base_last = cell(alone, "last_test")[1]
    base_best = cell(alone, "best_test")[1]
    for kind in ("methods", "schemes"):
        keys = list(dict.fromkeys(r["key"] for r in rows if r["kind"] == kind and r["key"] != "none"))
        out.append(f"\n**{kind.capitalize()}** ({dataset}, test accuracy %, mean ± std [95 % interval]; "
                   "last epoch | epoch of best validation accuracy; Δ = tuned last-epoch mean − student alone)\n")
        out.append("| key | tuned values | benchmark: last | benchmark: best-val epoch | tuned: last | "
                   "tuned: best-val epoch | Δ tuned | Δ benchmark |")
        out.append("|---|---|---|---|---|---|---|---|")
        out.append(f"| none (student alone) | — | {cell(alone, 'last_test')[0]} | {cell(alone, 'best_test')[0]} "
                   "| | | | |")
        for k in keys:
            b = [r for r in rows if r["key"] == k and r["defaults"] == "benchmark"]
            t = [r for r in rows if r["key"] == k and r["defaults"] == "tuned"]
            e = tuned_entry(dataset, kind, k)
            vals = "not tuned" if e is None else ("as benchmark" if e.get("same_as_benchmark") else ", ".join(
                ([f"w={e['weight']:.3g}"] if e.get("weight") is not None else [])
                + [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in e["params"].items()]))
            bl, bm = cell(b, "last_test")
            tl, tm = cell(t, "last_test")
            d = lambda m: "—" if m is None or base_last is None else f"{m - base_last:+.2f}"
            out.append(f"| {k} | {vals} | {bl} | {cell(b, 'best_test')[0]} | {tl} | {cell(t, 'best_test')[0]} "
                       f"| {d(tm)} | {d(bm)} |")
    if base_best is not None:
        out.append(f"\nStudent alone at its best-validation epoch: {base_best:.2f} %.")
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
    a = p.parse_args(argv)
    a.epochs = a.epochs or None
    if a.home:
        os.environ["KD_EXPLORER_HOME"] = a.home
    from explorer.kd import list_methods
    from explorer.schemes import list_schemes
    from explorer.store import Store
    from explorer.tuned import tuned_entry
    path = Path(a.csv)
    if not a.table_only:
        store = Store()
        seeds = [int(s) for s in a.seeds.split(",")]
        wanted = a.keys.split(",") if a.keys else list_methods() + [s for s in list_schemes() if s != "offline"]
        keys = [("methods", "none")] + [("methods" if k in list_methods() else "schemes", k) for k in wanted]
        for kind, key in keys:   # key by key, so each key's benchmark and tuned rows finish together
            for defaults in a.defaults.split(","):
                if key == "none" and defaults != "benchmark":
                    continue
                entry = tuned_entry(a.dataset, kind, key) if defaults == "tuned" else None
                if defaults == "tuned" and entry is None:
                    continue   # not tuned (yet): only its benchmark row
                for seed in seeds:
                    done = {(r["defaults"], r["key"], r["seed"]) for r in read_rows(path)}
                    if (defaults, key, str(seed)) in done:
                        continue
                    if entry is not None and entry.get("same_as_benchmark") and ("benchmark", key, str(seed)) in done:
                        row = dict(next(r for r in read_rows(path) if (r["defaults"], r["key"], r["seed"])
                                        == ("benchmark", key, str(seed))), defaults="tuned")
                    else:
                        row = run_one(defaults, kind, key, seed, a.dataset, store, a.epochs)
                    new = not path.is_file()
                    with open(path, "a", newline="") as f:
                        w = csv.DictWriter(f, FIELDS)
                        if new:
                            w.writeheader()
                        w.writerow(row)
                    print(f"{defaults:<9} {key:<14} seed {seed}: last {row.get('last_test')} best-val-epoch "
                          f"{row.get('best_test')} ({row['seconds']} s) {row['status']}", file=sys.stderr, flush=True)
    print(tables(read_rows(path), a.dataset))
    print(f"\nReproduce: OMP_NUM_THREADS=1 python benchmarks/bench_tuned_tables.py --dataset {a.dataset} "
          f"--seeds {a.seeds} --epochs {a.epochs} --csv {a.csv}  (tuned values: data/tuned/{a.dataset}.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
