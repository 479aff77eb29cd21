"""The published results beside the user's runs in the app: the Home map's method panel, the Train page's
method expander and the Benchmark page show each published figure with its source, and the user's finished
runs of the same method (and, on Benchmark, the same pair and dataset) beside it."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.app.analysis import taxonomy
from explorer.app.benchmark import benchmark_table, follows_protocol
from explorer.bench import protocol as P
from explorer.config import RunConfig
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
KD_LINE = "published: 73.33 % (resnet32x4→resnet8x4, CRD protocol, last epoch; CRD (Tian et al., ICLR 2020), " \
          "RepDistiller README)"


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    return "\n".join([c.value for c in at.caption] + [m.value for m in at.markdown])


def fake_run(store: Store, acc: float, **cfg) -> str:
    config = RunConfig.from_dict(cfg)
    rid = store.create_run(config.to_dict(), status="queued")
    store.set_status(rid, "completed", summary={"test_acc": acc})
    return rid


def test_home_method_panel_shows_the_published_figures_with_their_source_beside_the_users_runs():
    store = Store()
    fake_run(store, 0.95, dataset="digits", student="cnn_tiny", teacher="cnn_large", epochs=2, methods=["kd"])
    at = app()
    rows = taxonomy().to_dict("records")
    at.selectbox(key="home.pick").set_value(next(i for i, r in enumerate(rows) if r["key"] == "kd")).run()
    clean(at)
    text = texts(at)
    assert KD_LINE in text
    assert "KD + LS, resnet32x4→resnet8x4" in text and "logit-standardization-KD README" in text
    assert "yours: 95.00 % (digits, cnn_large→cnn_tiny, 1 run)" in text


def test_train_method_expander_shows_the_published_figures_with_their_source():
    at = app("1_Train")          # the default experiment: KD, its expander open
    clean(at)
    assert at.multiselect(key="train.methods").value == ["kd"]
    assert KD_LINE in texts(at)


def test_benchmark_page_shows_the_published_table_with_sources_beside_the_users_runs(tmp_path):
    store = Store()
    root = str(tmp_path)
    cfg = P.config("resnet32x4:resnet8x4", "kd", root)
    fake_run(store, 0.7401, **cfg)                                            # under the protocol
    fake_run(store, 0.7201, **dict(cfg, epochs=30))                          # the same pair, a shorter run
    fake_run(store, 0.90, **dict(cfg, methods=[{"key": "kd", "params": {"standardize": True}}]))   # KD + LS
    assert follows_protocol(cfg) and not follows_protocol(dict(cfg, epochs=30))
    table = benchmark_table(store)
    kd = table[(table["variant"] == "KD") & (table["teacher"] == "resnet32x4")].iloc[0]
    assert (kd["published (%)"], kd["your runs"], kd["yours, CRD protocol (%)"]) == (73.33, 2, "74.01")
    assert kd["yours (%)"].startswith("73.01 ± ")
    ls = table[(table["variant"] == "KD + LS") & (table["teacher"] == "resnet32x4")].iloc[0]
    assert (ls["published (%)"], ls["your runs"], ls["yours (%)"]) == (76.62, 1, "90.00")
    assert table[table["variant"] == "teacher"]["published (%)"].tolist() == [75.61, 79.42]

    at = app("8_Benchmark")
    clean(at)
    shown = at.dataframe[0].value
    assert len(shown) == len(table) and {"KD", "CRD", "DKD", "MLKD", "KD + LS", "teacher"} <= set(shown["variant"])
    row = shown[(shown["variant"] == "KD") & (shown["teacher"] == "resnet32x4")].iloc[0]
    assert row["published (%)"] == 73.33 and row["source"] == "CRD (Tian et al., ICLR 2020), RepDistiller README"
    text = texts(at)
    for source in ("RepDistiller README", "mdistiller README", "logit-standardization-KD README", "CTKD paper"):
        assert source in text, source
    assert "--data-root FOLDER --print-config" in text and "240 epochs, batch 64" in text


def test_benchmark_page_runs_the_protocol_from_an_allowed_folder(monkeypatch, tmp_path):
    from explorer import jobs
    seen = []
    monkeypatch.setattr(jobs, "submit", lambda c, store=None: seen.append(c) or (store or Store()).create_run(
        RunConfig.from_dict(c).to_dict(), status="queued"))
    home = Store().home
    root = home / "data" / "c100"
    root.mkdir(parents=True)
    at = app("8_Benchmark")
    at.text_input(key="bench.data_root").set_value("/etc").run()
    at.button(key="bench.run").click().run()
    assert not seen and any("reads datasets only from" in e.value for e in at.error)   # the allow-list holds
    at.text_input(key="bench.data_root").set_value(str(root)).run()
    at.button(key="bench.run").click().run()
    assert not at.exception
    assert [c["methods"] for c in seen] == [[{"key": "kd"}], []]
    assert all(c["data_root"] == str(root) and c["epochs"] == 240 and c["schedule"] == "step" for c in seen)
