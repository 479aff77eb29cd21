"""A new browser tab's Train form starts from the run config last launched, read from the run store (no
session state survives a new tab), says so, and goes back to the default preset on request."""
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from explorer import jobs, presets
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]


def train_page() -> AppTest:
    """A fresh AppTest: a new session, as a new browser tab gets."""
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_config(at: AppTest) -> dict:
    return yaml.safe_load(at.code[0].value)


def origin(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if "from your last launch" in c.value]


@pytest.fixture
def queued_only(monkeypatch):
    """The real jobs.submit (its configs stored resolved, as in use), with no worker started."""
    monkeypatch.setattr(jobs, "ensure_worker", lambda device="cpu", store=None: None)


def test_a_new_tab_starts_from_the_last_launch_and_can_go_back_to_the_default(queued_only):
    default = presets.preset_configs(presets.DEFAULT_PRESET)[0]
    first = train_page()                                          # an empty store: the default experiment
    assert not origin(first) and first.multiselect(key="train.methods").value == [m["key"] for m in default["methods"]]
    first.multiselect(key="train.methods").set_value(["kd", "at"]).run()
    first.number_input(key="train.hp.kd.temperature").set_value(6.0)
    first.number_input(key="train.epochs").set_value(3)
    first.number_input(key="train.seed").set_value(7)
    first.text_input(key="train.name").set_value("my kd+at try").run()
    launched = shown_config(first)
    first.button(key="train.launch").click().run()
    assert not first.exception and not first.error
    runs = Store().list_runs()
    assert [r["name"] for r in runs] == ["my kd+at try", "my kd+at try · student alone"]  # its comparison too

    fresh = train_page()                                          # a new tab: the last launch, not its comparison
    assert fresh.multiselect(key="train.methods").value == ["kd", "at"]
    assert fresh.number_input(key="train.hp.kd.temperature").value == 6.0
    assert fresh.number_input(key="train.epochs").value == 3 and fresh.number_input(key="train.seed").value == 7
    assert fresh.radio(key="train.teacher_source").value == "default"     # resolve's filled-in teacher, read back
    assert fresh.text_input(key="train.name").value == "my kd+at try"
    assert shown_config(fresh) == launched                        # the same run, were it launched again
    said = origin(fresh)
    assert len(said) == 1 and "my kd+at try" in said[0]

    fresh.button(key="train.to_default").click().run()           # back to the default experiment
    assert not fresh.exception and not origin(fresh)
    assert fresh.multiselect(key="train.methods").value == [m["key"] for m in default["methods"]]
    assert fresh.number_input(key="train.epochs").value == default["epochs"]
    assert shown_config(fresh)["name"] == default["name"]
