"""KD training throughput against a peer: torchdistill's own loop vs `kd-explorer bench throughput`.

    .venv/bin/python benchmarks/torchdistill_compare.py                 # resnet56 -> resnet20, batch 128
    .venv/bin/python benchmarks/torchdistill_compare.py --rounds 3 --steps 30

A script, not a test. The first run builds the peer's own virtual environment (default /tmp/td-venv,
~5.5 GB: torch 2.14.1 + torchvision 0.29.1, which install beside each other where PyPI's torchvision
does not beside our torch 2.13, then torchdistill from PyPI). Then, on this machine, alternately:

  theirs: torchdistill's DistillationBox (get_distillation_box) driven the way its example script
          drives it (pre_epoch_process, forward_process, post_forward_process), its KDLoss
          (T = 4, alpha = 0.1: CE 0.1 + 0.9 T^2 KL) inside WeightedSumLoss, its own CIFAR resnet56 /
          resnet20 from its model registry, a torch DataLoader over a CIFAR10-style dataset of PIL
          images with RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize;
  ours:   kd-explorer bench throughput --pairs resnet56:resnet20 --batch-size 128 --json (defaults).

Both train on the same 5,000 random 32x32x3 images (seed 0), for --warmup steps then --steps timed
steps, with the same torch thread count. Images/s for each round, the median of each side, and the
ratio are printed. Timings on a machine others are using are noisy: rerun on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = (["torch==2.14.1", "torchvision==0.29.1"], ["torchdistill"])
N_TRAIN, NUM_CLASSES = 5000, 10
CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def ensure_peer_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import torchdistill, torchvision"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"building the peer environment in {venv} (once; ~5.5 GB) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for packages in PEER_PACKAGES:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


# ---------------------------------------------------------------- theirs (runs inside the peer venv)
def measure_peer(device: str = "cpu", pair: str = "resnet56:resnet20", batch_size: int = 128, warmup: int = 3,
                 steps: int = 20, workers: int = 2) -> dict:
    """torchdistill's own DistillationBox loop (its KDLoss T=4, alpha=0.1, its registry's CIFAR resnets, a
    DataLoader of PIL images with RandomCrop+flip) for `steps` timed steps after `warmup` (0: every step timed),
    on `device`: {"images_per_s", "cpu_ms_per_image"}. Imports torchdistill: raises ImportError where it is not.
    The one peer loop: this comparison and scripts/gpu_check_steps.py (the GPU check) both call it."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import Dataset, RandomSampler
    from torchvision import transforms
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.models.registry import get_model

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    teacher_name, student_name = pair.split(":")

    class SyntheticCIFAR(Dataset):
        """CIFAR10-style: HWC uint8 images held in memory, one PIL image per __getitem__, torchvision transforms."""
        def __init__(self, transform):
            g = torch.Generator().manual_seed(0)
            self.data = torch.randint(0, 256, (N_TRAIN, 3, 32, 32), generator=g, dtype=torch.uint8) \
                .permute(0, 2, 3, 1).contiguous().numpy()
            self.targets = (np.arange(N_TRAIN) % NUM_CLASSES).tolist()
            self.transform = transform

        def __len__(self):
            return N_TRAIN

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.data[i])), self.targets[i]

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    torch.manual_seed(0)
    teacher = get_model(teacher_name, num_classes=NUM_CLASSES).to(device).eval()
    student = get_model(student_name, num_classes=NUM_CLASSES).to(device)
    steps_per_epoch = -(-N_TRAIN // batch_size)
    epochs = -(-(warmup + steps) // steps_per_epoch)
    train_config = {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": batch_size, "num_workers": workers, "drop_last": False,
                                         "pin_memory": device.type == "cuda"}, "requires_supp": True},
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": epochs * steps_per_epoch}, "scheduling_step": 1},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {
            "criterion": {"key": "KDLoss", "kwargs": {
                "student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
                "teacher_module_io": "output", "temperature": 4.0, "alpha": 0.1, "reduction": "batchmean"}},
            "weight": 1.0}}}},
    }
    box = get_distillation_box(teacher, student, {"train": SyntheticCIFAR(transform)}, train_config, device,
                               None, False, 1)
    step, images = 0, 0
    t0, c0 = (time.perf_counter(), time.process_time()) if warmup == 0 else (None, None)
    for epoch in range(epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:   # as torchdistill's example loop
            sample_batch = sample_batch.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            step += 1
            if step == warmup and warmup:
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
            elif step > warmup:
                images += len(targets)
            if step == warmup + steps:
                break
        if step == warmup + steps:
            break
    sync()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU time of this process only: with DataLoader workers their decoding is not in it
    return {"images_per_s": images / seconds, "cpu_ms_per_image": 1000 * cpu / images}


def peer_worker(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    result = measure_peer("cpu", "resnet56:resnet20", a.batch_size, a.warmup, a.steps, a.workers)
    print(json.dumps(result | {"steps": a.steps, "workers": a.workers, "threads": torch.get_num_threads(),
                               "torch": torch.__version__}))


# ---------------------------------------------------------------- the comparison (our venv)
def run_theirs(python: Path, a) -> dict:
    cmd = [str(python), __file__, "--peer-worker", "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--batch-size", str(a.batch_size), "--threads", str(a.threads), "--workers", str(a.workers)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"torchdistill run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(a) -> dict:
    cmd = [sys.executable, "-m", "explorer", "bench", "throughput", "--pairs", "resnet56:resnet20",
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--threads", str(a.threads), "--json"]
    env = dict(os.environ, KD_EXPLORER_HOME=os.environ.get("KD_EXPLORER_HOME", "/tmp/kd-compare-home"))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"kd-explorer bench failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=os.environ.get("TD_VENV", "/tmp/td-venv"), help="the peer's virtual env")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument("--workers", type=int, default=2, help="their DataLoader worker processes")
    p.add_argument("--rounds", type=int, default=2, help="alternating theirs/ours rounds; medians are compared")
    p.add_argument("--peer-worker", dest="peer_worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peer_worker:
        peer_worker(a)
        return 0
    python = ensure_peer_venv(Path(a.venv))
    theirs, ours = [], []
    for r in range(a.rounds):
        theirs.append(run_theirs(python, a))
        ours.append(row := run_ours(a))
        for name, x in (("torchdistill", theirs[-1]), ("kd-explorer", ours[-1])):
            print(f"round {r + 1}: {name:<12} {x['images_per_s']:7.1f} img/s  "
                  f"{x['cpu_ms_per_image']:6.2f} CPU ms/image", flush=True)
    t, o = (statistics.median(x["images_per_s"] for x in side) for side in (theirs, ours))
    tc, oc = (statistics.median(x["cpu_ms_per_image"] for x in side) for side in (theirs, ours))
    opts = ", ".join(f"{k}={row[k]}" for k in ("channels_last", "teacher_dtype", "compile", "teacher_cache", "augment"))
    print(f"\nresnet56 -> resnet20, batch {a.batch_size}, {a.threads} threads, {a.steps} timed steps after {a.warmup}; "
          f"median of {a.rounds} rounds\n"
          f"  torchdistill (DataLoader, {a.workers} workers): {t:7.1f} img/s  {tc:6.2f} CPU ms/image\n"
          f"  kd-explorer  ({opts}): {o:7.1f} img/s  {oc:6.2f} CPU ms/image\n"
          f"  ratio ours/theirs: {o / t:.2f}x wall-clock (target >= 1.5x); {tc / oc:.2f}x by CPU time per image\n"
          "  (CPU time per image is the steadier figure on a shared machine; with --threads 1 and --workers 0 it\n"
          "  counts all the work of both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
