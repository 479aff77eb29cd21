import sys

import pytest
import torch

# Several test processes may share 2 cores; one thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store, so nothing leaks between tests or into data/."""
    monkeypatch.setenv("KD_EXPLORER_HOME", str(tmp_path / "home"))
    yield


@pytest.fixture(autouse=True)
def _restore_main_module():
    """AppTest runs a page as `__main__` and leaves it in sys.modules; a process spawned afterwards
    (multiprocessing's spawn re-imports the parent's main) would then execute that Streamlit page
    before its target: seen in CI as DDP ranks that never started. Put the real one back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
