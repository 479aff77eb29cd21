"""Issue 14 §3: the Train form says which defaults a run uses -- tuned for the dataset or the benchmark's --
its knowledge terms' widgets start from those values, and the choice reaches the launched config."""
import shutil
from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from explorer.recipes import resolve

REPO = Path(__file__).resolve().parents[2]


def app(page):
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page(f"pages/{page}.py").run()
    return at


def test_the_form_starts_from_tuned_values_and_benchmark_is_one_click_away(tmp_path, monkeypatch, submitted):
    shutil.copy(REPO / "data" / "tuned" / "digits.yaml", tmp_path / "digits.yaml")
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path))
    tuned_at = yaml.safe_load((tmp_path / "digits.yaml").read_text())["methods"]["at"]["weight"]
    assert tuned_at != 1000.0                                     # the shipped file moves AT's weight
    at = app("1_Train")
    at.multiselect(key="train.methods").set_value(["at"]).run()
    assert not at.exception
    assert at.selectbox(key="train.defaults").value == "tuned"
    assert any("tuned on digits" in c.value and "at: weight" in c.value for c in at.caption)
    assert at.number_input(key="train.w.at").value == tuned_at     # the widget shows what the run will use
    at.button(key="train.launch").click().run()
    main = submitted[0]
    # left unset (equal to the tuned value): resolve(), the one defaults pass, fills it and stores it
    assert main["defaults"] == "tuned" and main["methods"][0]["weight"] is None
    assert resolve(main).methods[0].weight == tuned_at

    at.selectbox(key="train.defaults").set_value("benchmark").run()
    assert not at.exception
    assert at.number_input(key="train.w.at").value == 1000.0       # the published value, one click away
    assert any(c.value.startswith("benchmark: the published values") for c in at.caption)
    at.checkbox(key="train.compare").uncheck()
    at.button(key="train.launch").click().run()
    bench = submitted[-1]
    assert bench["defaults"] == "benchmark" and resolve(bench).methods[0].weight in (None, 1000.0)
    assert resolve(bench).to_dict()["methods"][0]["weight"] in (None, 1000.0)


def test_without_a_tuned_file_the_form_offers_the_benchmark_only(submitted):
    at = app("1_Train")
    at.multiselect(key="train.methods").set_value(["at"]).run()
    assert not at.exception
    assert at.selectbox(key="train.defaults").options == ["benchmark (published)"]
    assert at.number_input(key="train.w.at").value == 1000.0
