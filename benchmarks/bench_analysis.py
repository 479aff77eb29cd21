"""Timing of the analysis hot paths on CPU (a script, not a test).

    .venv/bin/python benchmarks/bench_analysis.py            # synthetic features + zoo models
    .venv/bin/python benchmarks/bench_analysis.py --zoo-cka  # also CKA on real resnet56/resnet20 features

Targets (2 CPU threads):
  full 4x4 stage x stage linear CKA matrix, 1,000 samples, teacher-like feature shapes   < 1 s
  AT + Grad-CAM maps, 16 samples x 3 stages, teacher and student (stage_maps)           < 2 s
  relation matrices (cosine, RKD distance, RKD angles, gaps) for 256 samples, both models < 0.5 s
Each figure is the median of --repeats runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import attention as A  # noqa: E402
from explorer.analysis import cka as C  # noqa: E402
from explorer.analysis import relations as R  # noqa: E402

TEACHER_SHAPES = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
STUDENT_SHAPES = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds / threads) over `repeats` runs after a warm-up.
    On a shared, oversubscribed machine wall time is inflated by waiting for a core; CPU time
    divided by the thread count approximates the wall time the same work takes on idle cores."""
    fn()                                                   # warm-up (allocations, lazy imports)
    walls, cpus = [], []
    for _ in range(max(repeats, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append((time.process_time() - c0) / torch.get_num_threads())
    return statistics.median(walls), statistics.median(cpus)


def report(label: str, t: tuple[float, float], target: float) -> bool:
    wall, cpu = t
    ok = wall < target
    print(f"  {label:<60s} wall {wall:7.3f} s  (cpu/threads {cpu:6.3f} s)  target < {target:g} s  "
          f"{'OK' if ok else 'OVER'}")
    return ok


def synthetic_stages(shapes, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"stage{i + 1}": torch.randn((n,) + s, generator=g).relu_() for i, s in enumerate(shapes)}


def zoo_pair():
    try:
        from explorer.models.registry import create_model, list_models
        if {"resnet56", "resnet20"} <= set(list_models()):
            torch.manual_seed(0)
            return create_model("resnet56").eval(), create_model("resnet20").eval(), "resnet56 / resnet20 (zoo)"
    except Exception as e:                                     # zoo not importable: fall back
        print(f"  (zoo unavailable: {e}; using small stand-in CNNs)")
    from torch import nn

    def cnn(w):
        m = nn.Sequential()
        m.add_module("stage1", nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()))
        m.add_module("stage2", nn.Sequential(nn.Conv2d(w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU()))
        m.add_module("stage3", nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU()))
        m.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10)))
        m.kd_stages = ["stage1", "stage2", "stage3"]
        return m.eval()
    return cnn(32), cnn(16), "stand-in CNNs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000, help="samples for the CKA matrix")
    ap.add_argument("--zoo-cka", action="store_true", help="also time CKA on real resnet56/resnet20 features")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = "cd " + str(Path(__file__).resolve().parents[1]) + " && .venv/bin/python benchmarks/bench_analysis.py " \
        + " ".join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench_analysis: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start")
    print(f"reproduce: {cmd.strip()}")
    a = torch.randn(1000, 8192)
    wall, cpu = timed(lambda: a @ a.T, 3)
    print(f"machine check: float32 GEMM 1000x8192x1000 at {2e3 * 1e3 * 8192 / wall / 1e9:.0f} GFLOPS wall, "
          f"{2e3 * 1e3 * 8192 / cpu / 1e9:.0f} GFLOPS per cpu/threads-second "
          f"(an idle 2-thread run of this box reaches ~170)\n")
    del a
    ok = True

    # --- 1. CKA matrix ----------------------------------------------------------------------
    print(f"1. linear CKA, {len(TEACHER_SHAPES)} teacher x {len(STUDENT_SHAPES)} student stages, n={args.n}")
    print(f"   teacher {TEACHER_SHAPES}\n   student {STUDENT_SHAPES}")
    ft = synthetic_stages(TEACHER_SHAPES, args.n, 0)
    fs = synthetic_stages(STUDENT_SHAPES, args.n, 1)
    ok &= report("cka_matrix(kind='linear') [float32 Gram products, default]",
                 timed(lambda: C.cka_matrix(ft, fs), args.repeats), 1.0)
    report("cka_matrix(kind='linear', gram_dtype=float64) [reference]",
           timed(lambda: C.cka_matrix(ft, fs, gram_dtype=torch.float64), 1), 1.0)
    gt = C.stage_grams(ft)
    report("cka_matrix(cached teacher StageGrams, student features)",
           timed(lambda: C.cka_matrix(gt, fs), args.repeats), 1.0)
    del gt
    report("cka_matrix(kind='linear', gram_dtype=bfloat16) [opt-in, ~1e-4 error]",
           timed(lambda: C.cka_matrix(ft, fs, gram_dtype=torch.bfloat16), args.repeats), 1.0)
    report("cka_matrix(kind='minibatch', batch_size=250)",
           timed(lambda: C.cka_matrix(ft, fs, kind="minibatch", batch_size=250), 1), 1.0)
    del ft, fs

    teacher, student, what = zoo_pair()
    if args.zoo_cka:
        x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        ft = C.features_for(teacher, x, teacher.kd_stages, batch_size=250)
        fs = C.features_for(student, x, student.kd_stages, batch_size=250)
        print(f"   {what}: features for {args.n} inputs collected in {time.perf_counter() - t0:.2f} s "
              f"(not part of the target); teacher {[tuple(v.shape[1:]) for v in ft.values()]}")
        ok &= report(f"cka_matrix on real {what} features",
                     timed(lambda: C.cka_matrix(ft, fs), args.repeats), 1.0)
        del ft, fs

    # --- 2. attention maps -------------------------------------------------------------------
    x16 = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t_specs, s_specs = list(teacher.kd_stages)[-3:], list(student.kd_stages)[-3:]
    print(f"\n2. attention maps, 16 samples, {what}; teacher stages {t_specs}, student stages {s_specs}")

    def maps():                                 # one forward + one backward per model, all stages
        A.stage_maps(teacher, x16, t_specs)
        A.stage_maps(student, x16, s_specs)
    ok &= report("stage_maps: AT + Grad-CAM, 3 stages, teacher and student", timed(maps, args.repeats), 2.0)

    def maps_captum():                          # the per-layer API: captum LayerGradCam per stage
        A.activation_attention(teacher, x16, t_specs)
        A.activation_attention(student, x16, s_specs)
        for s in t_specs:
            A.gradcam(teacher, x16, s)
        for s in s_specs:
            A.gradcam(student, x16, s)
    report("activation_attention + gradcam() per stage (captum) [comparison]", timed(maps_captum, 1), 2.0)

    # --- 3. relations ------------------------------------------------------------------------
    g = torch.Generator().manual_seed(2)
    et, es = torch.randn(256, 64, generator=g), torch.randn(256, 64, generator=g)
    y = torch.arange(256) % 10
    print("\n3. relation matrices, 256 samples, 64-d embeddings (teacher and student)")

    def relations():
        out = {}
        for nm, e in (("t", et), ("s", es)):
            out[nm] = (R.cosine_gram(e), R.rkd_distance_matrix(e), R.rkd_angle_stats(e, max_samples=64))
        R.relation_gap(out["t"][0], out["s"][0])
        R.relation_gap(out["t"][1], out["s"][1])
        R.sort_by_class(out["t"][0], y)
        R.sort_by_class(out["s"][0], y)
    ok &= report("cosine + RKD distance + RKD angles (64 rows) + gaps + sort", timed(relations, args.repeats), 0.5)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.1f} at the end")
    print("all targets met (wall time)" if ok else "SOME TARGETS MISSED (wall time)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
