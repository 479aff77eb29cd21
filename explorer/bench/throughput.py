"""How fast the KD training step runs, where its time goes, and how close it is to the machine's peak.

    kd-explorer bench throughput --pairs resnet56:resnet20,resnet32x4:resnet8x4 --batch-size 128 --json

Trains offline KD for a fixed number of steps on CIFAR-shaped synthetic data (random 32x32x3 images,
10 classes, 5,000 training samples, resident on the device, pad-4 crop + flip augmentation) after a
warm-up, through the trainer's own batches and step (explorer.engine.train_batches / training_step),
with the speed options of a RunConfig. Achieved FLOP/s = images/s x (teacher forward + 3 x student
forward: forward plus a backward of twice its cost), as a fraction of a float32 GEMM measured in the
same command. The time split (teacher forward, student forward+backward, optimiser, data) comes
from timing those sections; on CUDA that synchronises at each boundary, so images/s is measured in a
separate, untimed pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..config import MethodTerm, RunConfig
from ..data import Dataset, DatasetSpec, RawData
from ..data.loader import VAL_FRACTION
from ..device import amp_dtype_for, fast_bf16, resolve_device
from ..errors import ConfigError
from ..engine import make_optimizer, make_schedule, train_batches, training_step
from ..models import create_model, model_info
from ..recipes import resolve
from ..schemes import RunContext, get_scheme
from ..speed import StepTimer, prepare_student, prepare_teacher

N_TRAIN = 5000
NUM_CLASSES = 10


def synthetic_cifar(device: torch.device, seed: int = 0):
    """A Dataset of random CIFAR-shaped uint8 images whose training split has exactly N_TRAIN rows."""
    per_class = round(N_TRAIN / NUM_CLASSES / (1 - VAL_FRACTION))   # 556: 500 train + 56 validation each
    g = torch.Generator().manual_seed(seed)
    n = per_class * NUM_CLASSES
    raw = RawData(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.arange(n) % NUM_CLASSES,
                  torch.randint(0, 256, (NUM_CLASSES, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.arange(NUM_CLASSES), tuple(str(i) for i in range(NUM_CLASSES)))
    spec = DatasetSpec("synthetic-cifar", "random CIFAR-shaped images (benchmark only)", None, NUM_CLASSES,
                       (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip", 4,
                       "resnet56", "resnet20")
    data = Dataset(spec, raw, None, device)
    assert len(data.train) == N_TRAIN, len(data.train)
    return data


def gemm_peak(device: torch.device, dtype=torch.float32, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of an n x n matmul on every thread: the best of short windows over `seconds` (the best,
    because other processes on a shared machine only ever slow a window down)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (a @ b).sum()
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        k, t0 = 0, time.perf_counter()
        while k == 0 or time.perf_counter() - t0 < 0.25:
            a @ b
            k += 1
        sync()
        best = max(best, 2 * n ** 3 * k / (time.perf_counter() - t0))
    return best


def measure_pair(teacher_name: str, student_name: str, opts: dict, batch_size: int, steps: int, warmup: int,
                 device: torch.device, data) -> dict:
    steps_per_epoch = data.steps_per_epoch(batch_size)
    epochs = -(-(warmup + 2 * steps) // steps_per_epoch)
    # "cifar10" only supplies the recipe defaults (lr, ...); the data is the synthetic set above
    cfg = resolve(RunConfig(dataset="cifar10", teacher=teacher_name, student=student_name,
                                  methods=[MethodTerm(opts["method"])], batch_size=batch_size, epochs=epochs,
                                  device=str(device), probe_size=0, augment=opts["augment"], amp=opts["amp"],
                                  channels_last=opts["channels_last"], teacher_dtype=opts["teacher_dtype"],
                                  compile=opts["compile"], teacher_cache=opts["teacher_cache"]))

    # The models, scheme and optimiser as engine.setup.build makes them (a random frozen teacher: speed only)
    def make_model(arch):
        return create_model(arch, num_classes=NUM_CLASSES, in_channels=3, image_size=32).to(device)
    torch.manual_seed(0)
    teacher = make_model(teacher_name).eval().requires_grad_(False)
    teacher = prepare_teacher(teacher, cfg)
    student = prepare_student(make_model(student_name), cfg)
    ctx = RunContext(cfg, data, device, student, teacher, make_model, steps_per_epoch, epochs)
    scheme = get_scheme("offline")(ctx).to(device)
    opt = make_optimizer(cfg, [p for p in scheme.parameters() if p.requires_grad], device)
    sched = make_schedule(cfg, opt, steps_per_epoch)
    amp_dtype = amp_dtype_for(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    timer = StepTimer(device)
    teacher_outputs = scheme.teacher_outputs   # timed where the scheme calls it (cache lookups included)

    def timed_teacher(batch):
        with timer("teacher"):
            return teacher_outputs(batch)
    scheme.teacher_outputs = timed_teacher
    gen = torch.Generator().manual_seed(0)

    def endless():
        step = 0
        for epoch in range(epochs):
            for batch in train_batches(data, cfg, gen, epoch, step, epochs * steps_per_epoch):
                step += 1
                yield batch
    batches = endless()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_steps(n: int, timed: bool) -> tuple[float, int]:
        nonlocal cpu_s
        timer.enabled = timed
        images, t0, c0 = 0, time.perf_counter(), time.process_time()
        for _ in range(n):
            with timer("data"):
                batch = next(batches)
            training_step(scheme, batch, opt, sched, amp_dtype, scaler, timer)
            images += len(batch.y)
        sync()
        cpu_s = time.process_time() - c0
        return time.perf_counter() - t0, images

    scheme.train()
    cpu_s = 0.0
    warm_s, _ = run_steps(warmup, timed=False)
    timer.reset()
    # CPU timing is free, so one timed pass gives both; on CUDA the split syncs, so images/s is untimed
    seconds, images = run_steps(steps, timed=True)
    split = {k: 1000 * v / steps for k, v in timer.totals.items()}
    if device.type == "cuda":
        seconds, images = run_steps(steps, timed=False)
    step_ms = 1000 * seconds / steps
    teacher_ms = split.get("teacher", 0.0)
    student_ms = split.get("forward", 0.0) + split.get("backward", 0.0) - teacher_ms
    t_flops = model_info(teacher_name, NUM_CLASSES, 3, 32)["flops"]
    s_flops = model_info(student_name, NUM_CLASSES, 3, 32)["flops"]
    images_per_s = images / seconds
    cache = scheme.teacher_cache
    return {
        "pair": f"{teacher_name}:{student_name}", "batch_size": batch_size, "steps": steps, "warmup": warmup,
        "images_per_s": round(images_per_s, 2), "step_ms": round(step_ms, 2),
        # process CPU time per image: on a shared machine wall time also counts waiting for a core
        "cpu_ms_per_image": round(1000 * cpu_s / images, 3),
        "teacher_ms": round(teacher_ms, 2), "student_ms": round(student_ms, 2),
        "optimizer_ms": round(split.get("optimizer", 0.0), 2), "data_ms": round(split.get("data", 0.0), 2),
        "teacher_flops": t_flops, "student_flops": s_flops,
        "flops_per_image": t_flops + 3 * s_flops, "achieved_gflops": round(images_per_s * (t_flops + 3 * s_flops) / 1e9, 2),
        "warmup_s": round(warm_s, 2), "teacher_cache_hit_rate": round(cache.hit_rate, 4) if cache else None,
        **opts, "teacher_dtype": cfg.teacher_dtype,   # as resolved ("auto" -> what ran)
    }


def main(argv: list[str]) -> int:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="kd-explorer bench throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="resnet56:resnet20", help="teacher:student,... (zoo names)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per pair")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--method", default="kd")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=d.channels_last)
    p.add_argument("--teacher-dtype", dest="teacher_dtype", choices=["float32", "bfloat16", "auto"], default="auto",
                   help="auto (the bench default): bf16 where the hardware computes it natively")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=d.compile)
    p.add_argument("--teacher-cache", dest="teacher_cache", action=argparse.BooleanOptionalAction, default=d.teacher_cache)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp, help="CUDA only")
    p.add_argument("--peak-seconds", dest="peak_seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true", help="one JSON object per pair on stdout; the table goes to stderr")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        device = resolve_device(a.device)
        pairs = [tuple(s.split(":")) for s in a.pairs.split(",") if s]
        if not pairs or any(len(x) != 2 for x in pairs):
            raise ValueError(f"--pairs must look like teacher:student[,teacher:student], got {a.pairs!r}")
        if a.steps < 1 or a.warmup < 0 or a.batch_size < 2:
            raise ValueError("--steps must be >= 1, --warmup >= 0 and --batch-size >= 2")
        opts = dict(method=a.method, channels_last=a.channels_last, teacher_dtype=a.teacher_dtype,
                    compile=a.compile, teacher_cache=a.teacher_cache, augment=a.augment, amp=a.amp)
        data = synthetic_cifar(device)
        peak = gemm_peak(device, seconds=a.peak_seconds)
        # a bf16 teacher runs on faster units than the float32 peak: measure theirs too, to say so
        peak_bf16 = gemm_peak(device, torch.bfloat16, seconds=a.peak_seconds) \
            if a.teacher_dtype != "float32" and fast_bf16(device) else None
        rows = []
        for t, s in pairs:
            r = measure_pair(t, s, opts, a.batch_size, a.steps, a.warmup, device, data)
            # the peak this step could reach: each model's FLOPs at the GEMM peak of the precision it runs in
            # (a bf16 teacher on the bf16 units, the student in float32), so the fraction stays <= 1
            t_peak = peak_bf16 if r["teacher_dtype"] == "bfloat16" and peak_bf16 else peak
            step_peak = r["flops_per_image"] / (r["teacher_flops"] / t_peak + 3 * r["student_flops"] / peak)
            r |= {"device": str(device), "threads": torch.get_num_threads(), "peak_gflops": round(peak / 1e9, 1),
                  "peak_gflops_bf16": round(peak_bf16 / 1e9, 1) if peak_bf16 else None,
                  "step_peak_gflops": round(step_peak / 1e9, 1),
                  "peak_fraction": round(r["achieved_gflops"] * 1e9 / step_peak, 4),
                  "fp32_peak_fraction": round(r["achieved_gflops"] * 1e9 / peak, 4)}
            rows.append(r)
            if a.json:
                print(json.dumps(r), flush=True)
    except (ConfigError, ValueError, KeyError) as e:
        print(f"bench throughput: {e}", file=sys.stderr)
        return 2
    out = sys.stderr if a.json else sys.stdout
    print(table(rows), file=out)
    flags = [f"--pairs {a.pairs}", f"--batch-size {a.batch_size}", f"--steps {a.steps}", f"--warmup {a.warmup}",
             f"--method {a.method}", f"--device {a.device}", f"--threads {torch.get_num_threads()}",
             f"--teacher-dtype {a.teacher_dtype}"] + \
            [f"--{'' if getattr(a, k) else 'no-'}{k.replace('_', '-')}"
             for k in ("channels_last", "compile", "teacher_cache", "augment", "amp")]
    print(f"\nGEMM peak: float32 2048x2048 on {torch.get_num_threads()} threads = {peak / 1e9:.1f} GFLOP/s "
          f"(best {a.peak_seconds:g} s window)" +
          (f"; bfloat16: {peak_bf16 / 1e9:.1f} GFLOP/s (the bf16 teacher's units)" if peak_bf16 else "") +
          ".\n'of peak': achieved / the step's peak (teacher FLOPs at its precision's GEMM peak, student FLOPs at "
          f"float32's).\nreproduce: kd-explorer bench throughput {' '.join(flags)}", file=out)
    return 0


def table(rows: list[dict]) -> str:
    head = f"{'pair':<22}{'batch':>6}{'img/s':>9}{'step ms':>9}{'teacher':>9}{'student':>9}{'optim':>8}{'data':>7}" \
           f"{'GFLOP/s':>9}{'of peak':>9}  options"
    lines = [head, "-" * len(head)]
    for r in rows:
        o = [k for k in ("channels_last", "compile", "teacher_cache") if r[k]] + \
            ([f"teacher {r['teacher_dtype']}"] if r["teacher_dtype"] != "float32" else []) + \
            ([] if r["augment"] else ["no augment"])
        if r["teacher_cache_hit_rate"] is not None:
            o.append(f"cache hits {100 * r['teacher_cache_hit_rate']:.0f}%")
        lines.append(f"{r['pair']:<22}{r['batch_size']:>6}{r['images_per_s']:>9.1f}{r['step_ms']:>9.0f}"
                     f"{r['teacher_ms']:>9.0f}{r['student_ms']:>9.0f}{r['optimizer_ms']:>8.1f}{r['data_ms']:>7.1f}"
                     f"{r['achieved_gflops']:>9.1f}{100 * r['peak_fraction']:>8.1f}%  {', '.join(o) or 'defaults'}")
    return "\n".join(lines)
