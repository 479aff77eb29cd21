import os

import pytest
import torch

# Several test processes may share 2 cores; one thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store, so nothing leaks between tests or into data/."""
    monkeypatch.setenv("KD_EXPLORER_HOME", str(tmp_path / "home"))
    yield
