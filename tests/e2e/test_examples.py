"""examples/explore_run.py end to end: trains a short KD run and its student-alone twin on digits
(bundled teacher), loads them from the store, writes every figure and prints sane key numbers."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from explorer import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "explore_run.py"

# figure name -> {printed number: (low, high)}
EXPECTED = {
    "training_curves": {"val_acc_kd": (0, 1), "val_acc_alone": (0, 1)},
    "attention_grid_at": {"gap_deepest_stage": (0, 1)},
    "attention_grid_gradcam": {"gap_deepest_stage": (0, 1)},
    "class_mean_maps": {"mean_abs_diff": (0, 1)},
    "distillation_comparison": {"gap_alone": (0, 1), "gap_distilled": (0, 1)},
    "cka_heatmap": {"cka_last_matched": (0, 1)},
    "cka_over_epochs": {"cka_last_pair_first_epoch": (0, 1), "cka_last_pair_final": (0, 1)},
    "relation_matrices": {"pearson": (-1, 1), "mean_abs_diff": (0, 2)},
    "rkd_angle_histogram": {"mean_cos_teacher": (-1, 1), "mean_cos_student": (-1, 1)},
    "dark_knowledge": {"off_diagonal_mass": (0, 0.9)},          # T=4 softens, but the true class leads
    "softened_bars": {"teacher_p_true_T4": (0, 1)},
    "confusion_heatmaps": {"teacher_acc": (0.9, 1), "student_acc": (0, 1)},   # the bundled teacher is ~99%
    "reliability_diagram": {"ece_teacher": (0, 0.2), "ece_student": (0, 1)},
    "per_class_accuracy": {"student_worst_class": (0, 1)},
    "disagreement_gallery": {"agreement": (0, 1), "top_kl": (0, 50)},
    "embedding_pca": {"silhouette_teacher": (-1, 1), "silhouette_student": (-1, 1)},
    "embedding_tsne": {"silhouette_teacher": (-1, 1), "silhouette_student": (-1, 1)},
}
LINE = re.compile(r"^\s+(\w+)\.html\s+(.*)$")


def test_explore_run_example(tmp_path):
    out = tmp_path / "figs"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")   # KD_EXPLORER_HOME: conftest's temp home
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(out), "--epochs", "3", "--n-train", "200"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    printed = {}
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            printed[m.group(1)] = {k: float(v) for k, v in re.findall(r"(\w+)=(\S+)", m.group(2))}
    assert set(printed) == set(EXPECTED), proc.stdout
    for name, ranges in EXPECTED.items():
        f = out / f"{name}.html"
        assert f.is_file() and f.stat().st_size > 1000, name
        assert "cdn.plot.ly" in f.read_text()[:5000] or "plotly-" in f.read_text(), name
        assert set(printed[name]) == set(ranges), (name, printed[name])
        for key, (lo, hi) in ranges.items():
            v = printed[name][key]
            assert math.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9, (name, key, v)
    assert sorted(p.stem for p in out.glob("*.html")) == sorted(EXPECTED)

    # the store holds the KD run and its student-alone twin, both completed
    runs = Store().list_runs(status="completed")
    assert sorted(r["methods"] for r in runs) == ["kd", "none"]
