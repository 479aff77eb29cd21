"""scripts/gpu_check.sh --dry: every step of the GPU check runs on the CPU with tiny budgets and writes the
result files the real run writes (issue 17 §2). The install step is skipped (this Python has the
dependencies), so no wheelhouse is needed; scripts/make_wheelhouse.sh is checked only for its --help and
its refusal of a bad argument (it downloads, which tests never do)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from support.writers import write_idx

REPO = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def tiny_fashion_mnist(folder: Path) -> bool:
    """600 training and 200 test images in the IDX layout: the real images where the Debian package is installed
    (then the bundled teacher must recognise them), else random ones. Returns whether they are real."""
    real = FASHION.is_dir()
    if real:
        from explorer.data.idx import FASHION_MNIST_CLASSES, load_idx_dataset
        raw = load_idx_dataset(FASHION, FASHION_MNIST_CLASSES)
        parts = {"train": (raw.train_x[:600, 0].numpy(), raw.train_y[:600].numpy()),
                 "t10k": (raw.test_x[:200, 0].numpy(), raw.test_y[:200].numpy())}
    else:
        g = np.random.default_rng(0)
        parts = {s: (g.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10)
                 for s, n in (("train", 600), ("t10k", 200))}
    for split, (x, y) in parts.items():
        write_idx(folder / f"{split}-images-idx3-ubyte", x.astype(np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte", y.astype(np.uint8))
    return real


def test_gpu_check_dry_runs_every_step_and_writes_its_results(tmp_path):
    data = tmp_path / "fashion"
    real = tiny_fashion_mnist(data)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("KD_EXPLORER_HOME", None)   # the script puts its store under $OUT
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry", "--data", str(data)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").is_file() else ""
    assert p.returncode == 0, p.stderr[-2000:] + log[-4000:]
    assert "nothing installed" in p.stderr                        # this Python has the deps: no wheelhouse needed
    assert (out / "failed.txt").read_text().strip() == ""
    s = json.loads((out / "summary.json").read_text())
    assert s["dry"] is True and s["environment"]["device"] == "cpu"

    # 1. the cuda tests: collected, every one skipped (no CUDA here), none failed
    text = (out / "cuda_tests.txt").read_text()
    assert s["cuda_tests_rc"] == "0"
    skipped = int(re.search(r"(\d+) skipped", text).group(1))
    n_tests = len(re.findall(r"^def test_", (REPO / "tests/cuda/test_cuda.py").read_text(), re.M))
    assert skipped == n_tests and "failed" not in text and "error" not in text.lower()

    # 2. throughput: both pairs at the dry batch, the trainer's numbers; the peer measured or said why not
    rows = s["throughput"]
    assert {r["pair"] for r in rows} == {"resnet56:resnet20", "resnet32x4:resnet8x4"}
    assert all(r["batch_size"] == 8 and r["steps"] == 2 and r["images_per_s"] > 0 and r["device"] == "cpu"
               for r in rows)
    (peer,) = s["torchdistill"]
    assert "skipped" in peer or (0 < peer["images_per_s"] < 1e5 and s["ratio_vs_torchdistill"])

    # 3. time to accuracy: one tiny attempt, no target, its epoch timed
    t = s["time_to_accuracy"]
    assert t["target"] is None and t["seconds_to_target"] is None and len(t["attempts"]) == 1
    (a,) = t["attempts"]
    assert a["epochs"] == 1 and len(a["per_epoch"]) == 1 and 0 <= a["test_acc"] <= 1 and a["seconds"] > 0
    if real:   # the bundled teacher loaded and recognises real Fashion-MNIST images
        assert a["teacher_acc"] > 0.8

    # 4. the default preset (the run and its comparison), then every analysis page's figures, error-free
    runs = s["preset"]["runs"]
    assert len(runs) == 2 and all(r["status"] == "completed" for r in runs)
    assert all("--device cpu" in r["command"] and "--epochs 1" in r["command"] for r in runs)
    figs = s["figures"]
    assert len(figs) == 5 and all(v["figures"] > 0 and not v["problems"] for v in figs.values())
    assert {v["run_shown"] for v in figs.values()} == {runs[0]["run_id"]}       # the distilled run is shown
    for page, v in figs.items():
        saved = json.loads((out / "figures" / f"{page}.json").read_text())
        assert len(saved) == v["figures"] and all("data" in f for f in saved)
    assert "## Throughput" in (out / "summary.md").read_text()


def test_make_wheelhouse_help_and_argument_checks(tmp_path):
    h = subprocess.run(["bash", "scripts/make_wheelhouse.sh", "--help"], cwd=REPO, capture_output=True, text=True)
    assert h.returncode == 0 and "--python-version" in h.stdout and "wheelhouse" in h.stdout
    bad = subprocess.run(["bash", "scripts/make_wheelhouse.sh", "--frobnicate"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    reqs = subprocess.run(["bash", "scripts/make_wheelhouse.sh", "--print-requirements"], cwd=REPO,
                          capture_output=True, text=True)
    assert reqs.returncode == 0
    names = {re.split(r"[<>=!~ \[]", ln)[0].lower() for ln in reqs.stdout.split()}
    assert {"numpy", "pandas", "streamlit", "pytest"} <= names and "torch" not in names   # torch is the machine's

