"""`kd-explorer bench methods` on digits (every method, 3 seeds) run twice in one command: by the local
executor (one run after another in this process) and by the Ray executor on a local 2-CPU cluster
(one task per run, 1 CPU each). Prints the wall-time ratio and whether every run's test accuracy is the
same under both executors for the same (method, seed) -- it should be: a run is a deterministic function
of its config and seed, wherever it runs. Each executor gets a fresh store of its own.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_ray_grid.py            # ~3+ min per executor on 2 cores
    python benchmarks/bench_ray_grid.py --keys kd,dkd --seeds 0,1 --epochs 2   # a quick look

--local-threads: torch threads of the local executor (default 1, as each Ray task has: equal arithmetic;
pass 0 for torch's default, one per core, which is what `kd-explorer bench` uses today).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--n-train", dest="n_train", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--keys", help="comma-separated methods (default: all)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--local-threads", dest="local_threads", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep both stores (else removed at the end)")
    a = p.parse_args(argv)

    import ray
    import torch

    from explorer.bench.compare import compare
    from explorer.kd import list_methods
    from explorer.store import Store

    keys = a.keys.split(",") if a.keys else list_methods()
    seeds = [int(s) for s in a.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="kdraybench"))
    quiet = lambda msg: None  # noqa: E731
    results, walls = {}, {}
    for executor in ("local", "ray"):
        store = Store(root / executor)
        if executor == "local" and a.local_threads:
            torch.set_num_threads(a.local_threads)
        if executor == "ray":   # its start is counted: a user of --executor ray pays it too (unless one runs)
            t0 = time.time()
            ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False, _temp_dir=str(root / "ray"),
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        else:
            t0 = time.time()
        runs, table = compare("methods", keys, a.dataset, a.n_train, seeds, a.epochs, "cpu", store, log=quiet,
                              executor=executor)
        walls[executor] = time.time() - t0
        results[executor] = {(r.key, r.seed): (r.test_acc, r.status) for r in runs.itertuples()}
        print(f"{executor:>5}: {len(runs)} runs in {walls[executor]:.1f} s "
              f"({sum(s == 'completed' for _, s in results[executor].values())} completed)", flush=True)
    ray.shutdown()

    same, differ = 0, []
    for k, (acc, status) in results["local"].items():
        other, ostatus = results["ray"][k]
        if status == ostatus and (acc == other or (math.isnan(acc) and math.isnan(other))):
            same += 1
        else:
            differ.append((k, acc, other, status, ostatus))
    print(f"\nwall time local / ray = {walls['local']:.1f} s / {walls['ray']:.1f} s = "
          f"{walls['local'] / walls['ray']:.2f}x  (ray on a {a.cpus}-CPU local cluster, 1 CPU per run; "
          f"local with {torch.get_num_threads() if a.local_threads else 'default'} torch threads)")
    print(f"per-run test accuracy equal for equal (method, seed): {same} of {len(results['local'])}")
    for (key, seed), acc, other, status, ostatus in differ:
        print(f"  differs: {key} seed {seed}: local {acc:.4f} ({status}) vs ray {other:.4f} ({ostatus})")
    if a.keep:
        print(f"stores: {root} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
