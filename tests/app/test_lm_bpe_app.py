"""Issue 16, item 1: the Language models page shows runs on a BPE dataset (`pydoc-bpe256`) in their own tokens:
the tokenizer comes from the dataset's meta, so the next-token bars and the per-token KL strip label subwords."""
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from support.lm import run_forward_and_reverse_kl

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dataset="pydoc-bpe256", teacher="gpt_1x32", teacher_epochs=1, n_train=32, epochs=1, batch_size=16,
            optimizer="adamw")


@pytest.fixture(scope="module")
def bpe_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lm_bpe_app")
    mp = pytest.MonkeyPatch()
    mp.setenv("KD_EXPLORER_HOME", str(home))
    run_forward_and_reverse_kl(TINY)
    yield home
    mp.undo()


def _labels(chart) -> list[str]:
    """Every x tick and cell text of a plotly chart element."""
    fig = json.loads(chart.proto.spec)
    out = []
    for trace in fig["data"]:
        for key in ("x", "text"):
            values = trace.get(key) or []
            out += [str(v) for row in values for v in (row if isinstance(row, list) else [row])]
    return out


def test_lm_page_renders_a_bpe_run_in_its_subwords(bpe_home, monkeypatch):
    monkeypatch.setenv("KD_EXPLORER_HOME", str(bpe_home))
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=240).run()
    at.switch_page("pages/9_Language_models.py").run()
    assert not at.exception, at.exception
    charts = list(at.get("plotly_chart"))
    assert len(charts) >= 5
    strip = _labels(charts[1])                     # the first KL strip: one cell per predicted token
    assert sum(len(t) > 1 and "␣" not in t and "⏎" not in t for t in strip) > 5, strip[:40]
    assert any("perplexity under the teacher" in m.value for m in at.markdown)
