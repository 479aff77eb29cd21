"""The Language models page renders every view of two real LM runs (forward KL and reverse KL students of the
bundled teacher) with no error, and the image pages say that a text run is not theirs instead of failing."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from support.lm import run_forward_and_reverse_kl

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dataset="pydoc", n_train=32, epochs=1, batch_size=16, optimizer="adamw")


@pytest.fixture(scope="module")
def lm_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lm_app")
    mp = pytest.MonkeyPatch()
    mp.setenv("KD_EXPLORER_HOME", str(home))
    run_forward_and_reverse_kl(TINY)
    yield home
    mp.undo()


def _page(name: str, home, monkeypatch) -> AppTest:
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=240).run()
    at.switch_page(f"pages/{name}.py").run()
    return at


def test_lm_page_renders_every_view(lm_home, monkeypatch):
    at = _page("9_Language_models", lm_home, monkeypatch)
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Next-token distributions", "Per-token KL", "Samples", "Attention", "Curves"]
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 5   # bars, two KL strips, attention, curves
    assert any("perplexity under the teacher" in m.value for m in at.markdown)
    at.slider(key="lm.T").set_value(2.0).run()   # the temperature slider re-renders the distributions
    assert not at.exception


def test_image_pages_point_text_runs_to_the_lm_page(lm_home, monkeypatch):
    at = _page("3_Attention_maps", lm_home, monkeypatch)
    assert not at.exception
    assert any("Language models" in i.value for i in at.info)
