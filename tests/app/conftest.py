"""Fixtures shared by the app's tests."""
import pytest

from explorer import jobs
from explorer.config import RunConfig
from explorer.store import Store


@pytest.fixture
def submitted(monkeypatch):
    """jobs.submit replaced: configs are recorded (and stored as queued runs), nothing trains."""
    seen = []

    def fake_submit(config, store=None):
        store = store or Store()
        cfg = RunConfig.from_dict(config) if isinstance(config, dict) else config
        seen.append(cfg.to_dict())
        return store.create_run(cfg.to_dict(), status="queued")
    monkeypatch.setattr(jobs, "submit", fake_submit)
    return seen
