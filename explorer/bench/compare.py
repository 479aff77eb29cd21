"""Mean +- std test accuracy per method (or scheme) against the student alone, under one fixed
budget and the same seeds: the survey's comparison tables, on the user's data.

    kd-explorer bench methods --dataset digits --n-train 300 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import RunConfig
from ..engine import Trainer
from ..errors import ConfigError, RunFailed
from ..kd import list_methods
from ..schemes import list_schemes


def compare(kind: str, keys: list[str], dataset: str, n_train: int | None, seeds: list[int],
            epochs: int | None = None, device: str = "auto", store=None, log=print):
    import pandas as pd

    rows = []
    for key in ["none"] + [k for k in keys if k != "none"]:
        for seed in seeds:
            cfg = dict(dataset=dataset, n_train=n_train, seed=seed, epochs=epochs, device=device, probe_size=0,
                       name=f"bench-{kind}-{key}-s{seed}")
            if key == "none":
                cfg["methods"] = []
            elif kind == "methods":
                cfg["methods"] = [key]
            else:
                cfg["scheme"] = key
                cfg["methods"] = ["kd"]   # offline-style schemes distill with KD; others ignore methods
            t0 = time.time()
            try:
                r = Trainer(RunConfig.from_dict(cfg), store).run()
                acc, status = r["test_acc"], r["status"]
            except RunFailed as e:
                acc, status = float("nan"), f"failed: {e}"
            except ConfigError as e:   # refused before it ran (e.g. FSP on unequal channels: recipes.check_pairing)
                acc, status = float("nan"), f"refused: {e}"
            rows.append({"key": key, "seed": seed, "test_acc": acc, "seconds": time.time() - t0, "status": status})
            log(f"  {key:<10} seed {seed}: test_acc={acc:.4f} ({time.time() - t0:.1f} s) {status if status != 'completed' else ''}")
    df = pd.DataFrame(rows)
    table = df.groupby("key", sort=False).agg(mean=("test_acc", "mean"), std=("test_acc", "std"),
                                              runs=("test_acc", "size"), seconds=("seconds", "mean"))
    base = table.loc["none", "mean"]
    table["delta_vs_none"] = table["mean"] - base
    table = table.reset_index()
    table["mean ± std (%)"] = [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(table["mean"], table["std"].fillna(0))]
    return df, table


def main(kind: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"kd-explorer bench {kind}")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--n-train", dest="n_train", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--keys", help=f"comma-separated {kind} (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=f"bench-{kind}.csv", help="CSV of the summary table")
    a = p.parse_args(argv)
    keys = a.keys.split(",") if a.keys else (list_methods() if kind == "methods" else
                                            [s for s in list_schemes() if s != "offline"])
    seeds = [int(s) for s in a.seeds.split(",")]
    t0 = time.time()
    runs, table = compare(kind, keys, a.dataset, a.n_train, seeds, a.epochs, a.device)
    Path(a.out).write_text(table.to_csv(index=False))
    runs.to_csv(Path(a.out).with_suffix(".runs.csv"), index=False)
    import pandas as pd
    with pd.option_context("display.width", 160):
        print(table[["key", "mean ± std (%)", "delta_vs_none", "runs", "seconds"]].to_string(index=False))
    cmd = " ".join(["kd-explorer", "bench", kind] + argv)
    print(f"\n{len(runs)} runs in {time.time() - t0:.0f} s; table written to {a.out}; reproduce: {cmd}", file=sys.stderr)
    return 0
