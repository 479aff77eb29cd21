import os
import sys
import tempfile

import pytest
import torch

# Several test processes may share 2 cores; one thread each avoids oversubscription.
torch.set_num_threads(1)
# No tuned defaults (data/tuned/) for fixtures of any scope either: module-scoped ones run before _isolated_home
os.environ["KD_EXPLORER_TUNED_DIR"] = tempfile.mkdtemp(prefix="kd-no-tuned-")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store, so nothing leaks between tests or into data/."""
    monkeypatch.setenv("KD_EXPLORER_HOME", str(tmp_path / "home"))
    # and no tuned defaults (data/tuned/): tests are written against the benchmark's values; test_tune.py opts in
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path / "tuned"))
    yield


@pytest.fixture(autouse=True)
def _restore_main_module():
    """AppTest runs a page as `__main__` and leaves it in sys.modules; a process spawned afterwards
    (multiprocessing's spawn re-imports the parent's main) would then execute that Streamlit page
    before its target: seen in CI as DDP ranks that never started. Put the real one back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


KINDS = ("unit", "e2e", "app", "browser")


def pytest_collection_modifyitems(items):
    """Each test is marked by the folder it lives in (tests/unit, tests/e2e, tests/app, tests/browser),
    so `pytest -m unit` runs the fast checks and `-m "not browser"` skips Chromium."""
    for item in items:
        kind = next((k for k in KINDS if f"/tests/{k}/" in str(item.path)), None)
        if kind is not None:
            item.add_marker(kind)
