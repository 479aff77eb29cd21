"""The run store at grid scale: 5,000 finished runs (30 epochs of metrics each), and how fast the Runs
page and `kd-explorer runs` answer over it (a script, not a test).

    .venv/bin/python benchmarks/bench_store_scale.py                     # 5,000 runs, this checkout
    .venv/bin/python benchmarks/bench_store_scale.py --runs 1000 --repeats 5
    .venv/bin/python benchmarks/bench_store_scale.py --repo /tmp/old-tree  # another tree of the code (before/after)

Targets (2 CPU cores): the Runs page renders in < 3 s (warm), `kd-explorer runs` answers in < 1 s.

The store is built in a temp dir: the schema by explorer.store.Store (so it is the tree's own), the rows by
bulk SQL in one transaction: 5,000 runs (configs from RunConfig, over 3 datasets x 3 students x 6
method/scheme choices, half of them "· student alone" partners), each with 30 epochs x 6 epoch metrics and
3 final ones (~900k metric rows). Then, each in a fresh process (KD_EXPLORER_HOME = the temp store):
  page cold   Home.py then pages/2_Runs.py under streamlit's AppTest: the Runs page's first render
  page warm   the same page rendered again in that process (the median of --repeats)
  cli         `python -m explorer runs` as a subprocess, wall time (the median of --repeats)
  cli --json  `python -m explorer runs --json` (every run), wall time
A tree given by --repo is benchmarked over the same store (its schema migration, if any, runs on first open).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("digits", "shapes", "cifar10")
STUDENTS = ("cnn_tiny", "cnn_small", "mlp_small")
CHOICES = (("offline", ["kd"]), ("offline", ["kd", "at"]), ("offline", ["rkd"]), ("dml", []), ("takd", ["kd"]),
           ("offline", ["dkd"]))
EPOCH_METRICS = ("val/acc", "train/loss", "train/acc", "train/ce", "lr", "images_per_s")


def build(home: Path, n: int, epochs: int, repo: Path) -> float:
    """A store of `n` completed runs at `home`, written by bulk SQL; returns the seconds it took."""
    sys.path.insert(0, str(repo))
    from explorer.config import RunConfig
    from explorer.store import Store
    t0 = time.perf_counter()
    store = Store(home)
    rng = random.Random(0)
    runs, metrics = [], []
    start = time.time() - n * 60
    for i in range(n):
        alone = i % 2 == 1
        dataset, student = DATASETS[(i // 2) % 3], STUDENTS[(i // 6) % 3]
        scheme, methods = ("offline", []) if alone else CHOICES[(i // 2) % len(CHOICES)]
        name = f"grid {i // 2}" + (" · student alone" if alone else "")
        cfg = RunConfig.from_dict(dict(name=name, dataset=dataset, student=student, teacher="cnn_large",
                                       scheme=scheme, methods=methods, epochs=epochs, seed=i)).to_dict()
        created = start + 60 * i
        rid = time.strftime("%Y%m%d-%H%M%S", time.localtime(created)) + f"-{i:06x}"
        acc = round(0.5 + 0.4 * rng.random(), 4)
        summary = {"test_acc": acc, "seconds": round(30 + 10 * rng.random(), 1), "epochs": epochs}
        if scheme != "dml" and not alone:
            summary |= {"teacher_acc": 0.95, "teacher_source": "bundled", "teacher_arch": "cnn_large"}
        runs.append((rid, name, "distill", "completed", created, created + 50, created, created + 50, dataset,
                     student, "cnn_large", scheme, "+".join(m for m in methods) or "none", json.dumps(cfg),
                     json.dumps(summary), "", str(store.runs_dir / rid)))
        for e in range(1, epochs + 1):
            metrics += [(rid, "epoch", e, e * 10, k, rng.random(), created + e) for k in EPOCH_METRICS]
        metrics += [(rid, "final", epochs, epochs * 10, k, acc, created + 50) for k in ("test/acc", "val/acc",
                                                                                       "seconds")]
    with store._tx() as db:
        db.executemany("INSERT INTO runs (id, name, role, status, created, updated, started, finished, dataset, "
                       "student, teacher, scheme, methods, config, summary, message, run_dir) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?)", metrics)
    return time.perf_counter() - t0


PAGE_CHILD = r"""
import json, sys, time
from streamlit.testing.v1 import AppTest
repo, repeats = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
at = AppTest.from_file(repo + "/Home.py", default_timeout=600).run()
t1 = time.perf_counter()
at.switch_page("pages/2_Runs.py").run()
t2 = time.perf_counter()
assert not at.exception, [e.value for e in at.exception]
rows = len(at.dataframe[0].value)
warm = []
for _ in range(repeats):
    t = time.perf_counter()
    at.run()
    warm.append(time.perf_counter() - t)
    assert not at.exception, [e.value for e in at.exception]
print(json.dumps({"home": t1 - t0, "cold": t2 - t1, "warm": warm, "rows": rows}))
"""


def _env(home: Path, repo: Path) -> dict:
    return {**os.environ, "KD_EXPLORER_HOME": str(home), "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}


def page(home: Path, repo: Path, repeats: int) -> dict:
    r = subprocess.run([sys.executable, "-c", PAGE_CHILD, str(repo), str(repeats)], cwd=repo, env=_env(home, repo),
                       capture_output=True, text=True, timeout=1800)
    if r.returncode:
        raise SystemExit(f"the Runs page failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cli(home: Path, repo: Path, *args: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "explorer", "runs", *args], cwd=repo, env=_env(home, repo),
                       capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"`kd-explorer runs {' '.join(args)}` failed:\n{r.stderr[-3000:]}")
    return took, len(r.stdout.splitlines())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repo", type=Path, default=REPO, help="the tree of the code to time (default: this checkout)")
    p.add_argument("--home", type=Path, help="reuse (or build) the store here instead of a temp dir")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    a = p.parse_args(argv)
    repo = a.repo.resolve()
    with tempfile.TemporaryDirectory(prefix="kd-store-scale-") as tmp:
        home = a.home or Path(tmp) / "home"
        if not (home / "runs.sqlite").exists():
            took = build(home, a.runs, a.epochs, repo)
            size = (home / "runs.sqlite").stat().st_size / 2**20
            print(f"built {a.runs} runs x {a.epochs} epochs in {took:.1f} s ({size:.0f} MiB) at {home}")
        cli(home, repo)   # the first open: any schema migration of an older store file happens here, untimed
        clis = [cli(home, repo) for _ in range(a.repeats)]
        js = [cli(home, repo, "--json") for _ in range(a.repeats)]
        pg = page(home, repo, a.repeats)
    med = statistics.median
    print(f"tree: {repo}")
    print(f"Runs page, cold (first render in a fresh process, after Home): {pg['cold']:.2f} s "
          f"[{pg['rows']} table rows]")
    print(f"Runs page, warm (median of {a.repeats}):                      {med(pg['warm']):.2f} s")
    print(f"kd-explorer runs (median of {a.repeats}):                      {med(c[0] for c in clis):.2f} s "
          f"[{clis[0][1]} lines]")
    print(f"kd-explorer runs --json (median of {a.repeats}):               {med(c[0] for c in js):.2f} s")
    print("reproduce: .venv/bin/python benchmarks/bench_store_scale.py " + " ".join(argv or sys.argv[1:]))
    if a.json:
        print(json.dumps({"runs": a.runs, "page_cold_s": pg["cold"], "page_warm_s": med(pg["warm"]),
                          "cli_s": med(c[0] for c in clis), "cli_json_s": med(c[0] for c in js)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
