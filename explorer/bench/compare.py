"""Mean +- std test accuracy per method (or scheme) against the student alone, under one fixed
budget and the same seeds: the survey's comparison tables, on the user's data.

    kd-explorer bench methods --dataset digits --n-train 300 --seeds 0,1,2
    kd-explorer bench methods --executor ray --address auto      # every run a Ray task (docs/ray.md)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..executors import EXECUTORS
from ..kd import list_methods
from ..schemes import list_schemes


def compare(kind: str, keys: list[str], dataset: str, n_train: int | None, seeds: list[int],
            epochs: int | None = None, device: str = "auto", store=None, log=print, executor: str | None = None,
            address: str | None = None, resume: bool = False, **run_many_options):
    """The grid (the student alone, then every key) x seeds, run by executors.run_many: here one after
    another (executor "local") or in parallel on a Ray cluster ("ray"); resume: reuse or finish the
    earlier runs of the same grid (same names and configs) instead of starting over."""
    import pandas as pd

    from ..executors import REFUSED, run_many
    from ..store import Store

    store = store or Store()
    grid = [(key, seed) for key in ["none"] + [k for k in keys if k != "none"] for seed in seeds]
    configs = []
    for key, seed in grid:
        cfg = dict(dataset=dataset, n_train=n_train, seed=seed, epochs=epochs, device=device, probe_size=0,
                   name=f"bench-{kind}-{key}-s{seed}")
        if key == "none":
            cfg["methods"] = []
        elif kind == "methods":
            cfg["methods"] = [key]
        else:
            cfg["scheme"] = key
            cfg["methods"] = ["kd"]   # offline-style schemes distill with KD; others ignore methods
        configs.append(cfg)
    ids = run_many(configs, executor=executor, address=address, store=store, resume=resume, log=log,
                   **run_many_options)
    rows = []
    for (key, seed), run_id in zip(grid, ids):
        run = store.get_run(run_id)
        status, msg = run["status"], run["message"] or ""
        acc = run["summary"].get("test_acc", float("nan")) if status == "completed" else float("nan")
        if msg.startswith(REFUSED):   # refused before it ran (e.g. FSP on unequal channels: recipes.check_pairing)
            status = f"refused: {msg[len(REFUSED):]}"
        elif status != "completed":
            status = f"{status}: {msg}"
        seconds = run["summary"].get("seconds", float("nan"))
        rows.append({"key": key, "seed": seed, "test_acc": acc, "seconds": seconds, "status": status,
                     "run_id": run_id})
        log(f"  {key:<10} seed {seed}: test_acc={acc:.4f} ({seconds:.1f} s) {status if status != 'completed' else ''}")
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
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="local: one run after another here; ray: each run a Ray task (default: "
                        "KD_EXPLORER_EXECUTOR, else local; docs/ray.md)")
    p.add_argument("--address", default=None, help="the Ray cluster: auto | ray://HOST:PORT | IP:PORT "
                   "(default: KD_EXPLORER_RAY_ADDRESS, else a cluster started here, else a new local one)")
    p.add_argument("--resume", action="store_true", help="reuse this grid's completed runs and continue its "
                   "interrupted, failed or cancelled ones from their checkpoints")
    p.add_argument("--retries", type=int, default=1, help="ray: resume a run this often when its worker dies")
    p.add_argument("--cpus-per-run", dest="num_cpus", type=float, default=1, help="ray: CPUs each run asks for")
    a = p.parse_args(argv)
    keys = a.keys.split(",") if a.keys else (list_methods() if kind == "methods" else
                                            [s for s in list_schemes() if s != "offline"])
    seeds = [int(s) for s in a.seeds.split(",")]
    t0 = time.time()
    runs, table = compare(kind, keys, a.dataset, a.n_train, seeds, a.epochs, a.device, executor=a.executor,
                          address=a.address, resume=a.resume, retries=a.retries, num_cpus=a.num_cpus)
    Path(a.out).write_text(table.to_csv(index=False))
    runs.to_csv(Path(a.out).with_suffix(".runs.csv"), index=False)
    import pandas as pd
    with pd.option_context("display.width", 160):
        print(table[["key", "mean ± std (%)", "delta_vs_none", "runs", "seconds"]].to_string(index=False))
    cmd = " ".join(["kd-explorer", "bench", kind] + argv)
    print(f"\n{len(runs)} runs in {time.time() - t0:.0f} s; table written to {a.out}; reproduce: {cmd}", file=sys.stderr)
    return 0
