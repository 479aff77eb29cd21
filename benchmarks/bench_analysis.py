"""Timing of the analysis hot paths on CPU (a script, not a test).

    .venv/bin/python benchmarks/bench_analysis.py                      # --real (default): digits + shapes
    .venv/bin/python benchmarks/bench_analysis.py --datasets shapes    # one dataset
    .venv/bin/python benchmarks/bench_analysis.py --synthetic          # synthetic features + zoo models
    .venv/bin/python benchmarks/bench_analysis.py --synthetic --zoo-cka # also CKA on resnet56/resnet20 features

Targets (2 CPU threads):
  full 4x4 stage x stage linear CKA matrix, 1,000 samples                                < 1 s
  AT + Grad-CAM maps, 16 samples x 3 stages, teacher and student (stage_maps)           < 2 s
  relation matrices (cosine, RKD distance, RKD angles, gaps) for 256 samples, both models < 0.5 s

--real: real images and real models. For each dataset (digits: 1x8x8, shapes: 3x32x32) the first
1,000 images of train+test (explorer.data.load_dataset, normalised as in training) go through the
zoo's resnet56 (teacher) and resnet20 (student), both with 4 kd_stages (relu, layer1, layer2,
layer3); the timed parts are cka_matrix on those 4 x 4 stage features, stage_maps on 16 images x
the last 3 stages of both models, and the relation matrices of 256 images' penultimate embeddings
(64-d). The weights are seeded random ones, not trained: the cost depends on the shapes, not the
values (the CKA values printed are therefore not meaningful). Collecting the features (the forward
passes) is reported but is not part of the targets.
--synthetic: random ReLU'd features with resnet56/resnet20-like stage shapes at 32x32.
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
from explorer.analysis import cka_stages as CS  # noqa: E402
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


def header(argv) -> None:
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


def relation_work(et, es, y):
    """What the Relation matrices page computes for one selection of samples, both models."""
    def relations():
        out = {}
        for nm, e in (("t", et), ("s", es)):
            out[nm] = (R.cosine_gram(e), R.rkd_distance_matrix(e), R.rkd_angle_stats(e, max_samples=64))
        R.relation_gap(out["t"][0], out["s"][0])
        R.relation_gap(out["t"][1], out["s"][1])
        R.sort_by_class(out["t"][0], y)
        R.sort_by_class(out["s"][0], y)
    return relations


def bench_cka_variants(ft, fs, repeats: int, reference: bool = False) -> bool:
    """The linear CKA matrix as the app computes it (against the 1 s target), then, for information: exact
    float64 Grams (reference=True), cached teacher Grams, and bf16 Gram products."""
    ok = report("cka_matrix(kind='linear') [float32 Gram products, default]",
                timed(lambda: CS.cka_matrix(ft, fs), repeats), 1.0)
    if reference:
        report("cka_matrix(kind='linear', gram_dtype=float64) [reference]",
               timed(lambda: CS.cka_matrix(ft, fs, gram_dtype=torch.float64), 1), 1.0)
    report("cka_matrix(cached teacher StageGrams, student features)",
           timed(lambda grams=CS.stage_grams(ft): CS.cka_matrix(grams, fs), repeats), 1.0)
    report("cka_matrix(kind='linear', gram_dtype=bfloat16) [opt-in, ~1e-4 error]",
           timed(lambda: CS.cka_matrix(ft, fs, gram_dtype=torch.bfloat16), repeats), 1.0)
    return ok


def bench_stage_maps(teacher, student, x16, t_specs, s_specs, repeats: int) -> bool:
    """AT + Grad-CAM for 16 images on 3 stages of both models, against the 2 s target."""
    def maps():                                 # one forward + one backward per model, all stages
        A.stage_maps(teacher, x16, t_specs)
        A.stage_maps(student, x16, s_specs)
    return report("stage_maps: AT + Grad-CAM, 3 stages, teacher and student", timed(maps, repeats), 2.0)


def real_data(name: str, n: int):
    """The first n images of `name`'s train + test splits, normalised as in training, and labels."""
    from explorer.data import load_dataset
    data = load_dataset(name, None, None, torch.device("cpu"))
    x = torch.cat([data.train.x, data.test.x])[:n]
    y = torch.cat([data.train.y, data.test.y])[:n]
    if x.shape[0] < n:
        print(f"   (only {x.shape[0]} images in {name}'s train + test)")
    return data.normalize(x), y, data


def real(args) -> bool:
    from explorer.models import create_model
    from explorer.models.outputs import TapSpecs
    ok = True
    for name in args.datasets:
        x, y, data = real_data(name, args.n)
        torch.manual_seed(0)

        def make(arch):
            return create_model(arch, num_classes=data.num_classes, in_channels=data.shape[0],
                                image_size=data.shape[1]).eval()
        teacher, student = make("resnet56"), make("resnet20")
        ts, ss = TapSpecs.of(teacher), TapSpecs.of(student)
        n = x.shape[0]
        print(f"=== {name}: {n} images {tuple(x.shape[1:])} from train+test; resnet56 teacher "
              f"({sum(p.numel() for p in teacher.parameters()) / 1e6:.2f} M params) -> resnet20 student "
              f"({sum(p.numel() for p in student.parameters()) / 1e6:.2f} M); seeded random weights")
        t0 = time.perf_counter()
        ft = CS.features_for(teacher, x, list(ts.stages) + [ts.embedding], batch_size=250)
        fs = CS.features_for(student, x, list(ss.stages) + [ss.embedding], batch_size=250)
        et, es = ft.pop(ts.embedding).flatten(1), fs.pop(ss.embedding).flatten(1)
        print(f"   features collected in {time.perf_counter() - t0:.2f} s (forward passes; not part of a target)")
        print(f"   teacher stages {[(k, tuple(v.shape[1:])) for k, v in ft.items()]}")
        print(f"   student stages {[(k, tuple(v.shape[1:])) for k, v in fs.items()]}")

        print(f"1. linear CKA, {len(ft)} teacher x {len(fs)} student stages, n={n}")
        ok &= bench_cka_variants(ft, fs, args.repeats)
        print(f"   (CKA of the deepest pair {CS.cka_matrix(ft, fs).iloc[-1, -1]:.3f}: random weights, a sanity "
              "check only)")
        del ft, fs

        x16 = x[:16]
        t_specs, s_specs = list(ts.stages)[-3:], list(ss.stages)[-3:]
        print(f"2. attention maps, 16 images; teacher stages {t_specs}, student stages {s_specs}")
        ok &= bench_stage_maps(teacher, student, x16, t_specs, s_specs, args.repeats)

        k = min(256, n)
        print(f"3. relation matrices, {k} images' penultimate embeddings (teacher {tuple(et.shape[1:])}, "
              f"student {tuple(es.shape[1:])})")
        ok &= report("cosine + RKD distance + RKD angles (64 rows) + gaps + sort",
                     timed(relation_work(et[:k], es[:k], y[:k]), args.repeats), 0.5)
        print()
    return ok


def synthetic(args) -> bool:
    ok = True
    # --- 1. CKA matrix ----------------------------------------------------------------------
    print(f"1. linear CKA, {len(TEACHER_SHAPES)} teacher x {len(STUDENT_SHAPES)} student stages, n={args.n}")
    print(f"   teacher {TEACHER_SHAPES}\n   student {STUDENT_SHAPES}")
    ft = synthetic_stages(TEACHER_SHAPES, args.n, 0)
    fs = synthetic_stages(STUDENT_SHAPES, args.n, 1)
    ok &= bench_cka_variants(ft, fs, args.repeats, reference=True)
    report("cka_matrix(kind='minibatch', batch_size=250)",
           timed(lambda: CS.cka_matrix(ft, fs, kind="minibatch", batch_size=250), 1), 1.0)
    del ft, fs

    teacher, student, what = zoo_pair()
    if args.zoo_cka:
        x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        ft = CS.features_for(teacher, x, teacher.kd_stages, batch_size=250)
        fs = CS.features_for(student, x, student.kd_stages, batch_size=250)
        print(f"   {what}: features for {args.n} inputs collected in {time.perf_counter() - t0:.2f} s "
              f"(not part of the target); teacher {[tuple(v.shape[1:]) for v in ft.values()]}")
        ok &= report(f"cka_matrix on real {what} features",
                     timed(lambda: CS.cka_matrix(ft, fs), args.repeats), 1.0)
        del ft, fs

    # --- 2. attention maps -------------------------------------------------------------------
    x16 = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t_specs, s_specs = list(teacher.kd_stages)[-3:], list(student.kd_stages)[-3:]
    print(f"\n2. attention maps, 16 samples, {what}; teacher stages {t_specs}, student stages {s_specs}")
    ok &= bench_stage_maps(teacher, student, x16, t_specs, s_specs, args.repeats)

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

    relations = relation_work(et, es, y)
    ok &= report("cosine + RKD distance + RKD angles (64 rows) + gaps + sort", timed(relations, args.repeats), 0.5)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--real", dest="mode", action="store_const", const="real", default="real",
                      help="real images and real zoo models (default)")
    mode.add_argument("--synthetic", dest="mode", action="store_const", const="synthetic",
                      help="synthetic features of teacher-like shapes")
    ap.add_argument("--datasets", type=lambda v: [d for d in v.split(",") if d], default=["digits", "shapes"],
                    help="--real: comma-separated datasets (default digits,shapes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000, help="samples for the CKA matrix")
    ap.add_argument("--zoo-cka", action="store_true", help="--synthetic: also time CKA on resnet56/resnet20 "
                                                           "features of random 32x32 inputs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    header(argv)
    ok = real(args) if args.mode == "real" else synthetic(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at the end")
    print("all targets met (wall time)" if ok else "SOME TARGETS MISSED (wall time)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
