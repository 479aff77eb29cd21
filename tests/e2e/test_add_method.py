"""Adding a method is one file: a ~30-line method dropped into explorer/kd/ of a copy of the package is
listed by the CLI, offered by the Train page's menu and trained end to end, with nothing else touched."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

METHOD = textwrap.dedent('''
    """Mean absolute difference of softened probabilities: a toy response method for the one-file test."""
    from __future__ import annotations

    import torch.nn.functional as F

    from .base import Batch, HParam, Method, Outputs, Paper
    from .registry import register_method


    @register_method
    class ProbL1(Method):
        key = "probl1"
        name = "Probability L1 (test method)"
        category = "response"
        paper = Paper("A. Tester", "A Method Added in One File", 2024, "Tests")
        equation = r"\\mathcal{L} = \\tfrac{1}{B}\\sum_i \\|\\sigma(z^s_i/T) - \\sigma(z^t_i/T)\\|_1"
        hparams = (HParam("temperature", 2.0, 1.0, 20.0, "softening temperature T"),)
        default_weight = 1.0
        convention = "batch mean of the per-sample L1 distance"

        def forward(self, s: Outputs, t: Outputs, batch: Batch):
            T = self.hp["temperature"]
            p_s, p_t = F.softmax(s.logits / T, 1), F.softmax(t.logits.detach() / T, 1)
            return {"probl1": (p_s - p_t).abs().sum(1).mean()}
''')

APP_MENU = textwrap.dedent('''
    import json, sys
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(sys.argv[1], default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    print(json.dumps(list(at.multiselect(key="train.methods").options)))
''')


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "home")
    for name in ("explorer", "pages", "data", ".streamlit"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("Home.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    (root / "explorer" / "kd" / "probl1.py").write_text(METHOD)
    return root


def _python(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_method_file_is_the_whole_change(tmp_path):
    assert len(METHOD.strip().splitlines()) <= 35
    root = _copy_package(tmp_path)
    where = _python(root, "-c", "import explorer; print(explorer.__file__)")
    assert where.stdout.strip() == str(root / "explorer" / "__init__.py"), where.stderr   # the copy, not the repo

    listed = _python(root, "-m", "explorer", "methods", "--json")
    assert listed.returncode == 0, listed.stderr
    method = {m["key"]: m for m in json.loads(listed.stdout)}["probl1"]
    assert method["category"] == "response" and method["hparams"][0]["name"] == "temperature"

    menu = _python(root, "-c", APP_MENU, str(root / "pages" / "1_Train.py"))
    assert menu.returncode == 0, menu.stderr[-3000:]
    options = json.loads(menu.stdout.strip().splitlines()[-1])
    assert any(str(o).startswith("probl1") for o in options), options

    run = _python(root, "-m", "explorer", "run", "--dataset", "digits", "--method", "probl1", "--epochs", "1",
                  "--n-train", "100", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["teacher_source"] == "bundled"
    shown = _python(root, "-m", "explorer", "show", result["run_id"], "--json")
    terms = {n for n in json.loads(shown.stdout)["summary"]} | set(_epoch_metric_names(root, result["run_id"]))
    assert "train/probl1" in terms, sorted(terms)


def _epoch_metric_names(root: Path, run_id: str) -> list[str]:
    code = ("import json, sys; from explorer.store import Store; "
            "print(json.dumps(sorted({m['name'] for m in Store().metrics(sys.argv[1], 'epoch')})))")
    out = _python(root, "-c", code, run_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
