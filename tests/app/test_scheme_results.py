"""Issue 13, items 6, 8 and 9: scheme-aware results (no teacher where a scheme had none, what each scheme
produced), the Runs table (teacher it used, scheme, methods per scheme, last launched group by default) and
figures a lecturer can use (accuracy axes from 0, HTML / PNG / zip downloads with the runs' configs)."""
import io
import json
import types
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from streamlit.testing.v1 import AppTest

from explorer import teachers
from explorer.app import export as X
from explorer.app import runs as R
from explorer.config import RunConfig
from explorer.plots.app_extras import gap_bars
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]


def completed(store: Store, summary: dict, **cfg) -> str:
    config = RunConfig.from_dict(dict(dict(dataset="digits", student="cnn_tiny", teacher="cnn_large", epochs=2), **cfg))
    rid = store.create_run(config.to_dict(), status="queued")
    store.log_metrics(rid, "epoch", 1, 2, {"val/acc": 0.5, "train/loss": 1.0})
    store.set_status(rid, "completed", summary=summary)
    return rid


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page(f"pages/{name}.py").run()
    return at


def test_a_scheme_without_teacher_gets_no_teacher_bar_no_gap_and_shows_its_peers():
    store = Store()
    bundled = teachers.TeacherRef("cnn_large", "bundled", str(teachers.BUNDLED / "abc123.pt"), test_acc=0.99)
    kd = completed(store, {"test_acc": 0.9, "teacher_acc": 0.99, "test_acc/student": 0.9}, methods=["kd"], name="kd")
    store.update_run(kd, teacher_ref=bundled.to_json())
    dml = completed(store, {"test_acc": 0.92, "teacher_acc": None, "test_acc/student": 0.92, "test_acc/peer1": 0.91},
                    scheme="dml", methods=[], name="dml")
    alone = completed(store, {"test_acc": 0.85, "teacher_acc": 0.99}, methods=[], name="dml · student alone")
    rows = R.gap_rows(store, [dml, alone])
    assert not [r for r in rows if r["kind"] == "teacher"]               # DML never saw one; alone's unrecorded
    rows = R.gap_rows(store, [dml, kd, alone])
    by = {r["id"]: r for r in rows if r["kind"] != "teacher"}
    assert by[dml]["teacher_acc"] is None and by[dml]["label"].startswith("dml<br>")   # named by its scheme
    assert by[f"{dml}/peer1"]["kind"] == "peer" and by[f"{dml}/peer1"]["acc"] == 0.91   # every peer's accuracy
    assert R.gap_closed([by[dml], by[alone]] + [r for r in rows if r["kind"] == "teacher"]) is None  # no gap claimed
    texts = {t["x"][0]: t["text"][0] for t in gap_bars(rows).to_dict()["data"]}
    assert "pts" not in texts[by[dml]["label"]] and "pts" in texts[by[kd]["label"]]
    alone_only = gap_bars([r for r in R.gap_rows(store, [dml]) if r["kind"] != "teacher"])
    assert "no teacher" in alone_only.layout.title.text


def test_what_each_scheme_produced_is_a_bar():
    store = Store()
    takd = completed(store, {"test_acc": 0.9, "teacher_acc": 0.98, "test_acc/student": 0.9,
                             "test_acc/assistant": 0.94}, scheme="takd", methods=["kd"], name="takd")
    kdcl = completed(store, {"test_acc": 0.9, "test_acc/student": 0.9, "test_acc/peer1": 0.89,
                             "test_acc/ensemble": 0.93}, scheme="kdcl", methods=[], name="kdcl")
    kinds = {r.get("id"): r["kind"] for r in R.gap_rows(store, [takd, kdcl])}
    assert kinds[f"{takd}/assistant"] == "assistant"
    assert kinds[f"{kdcl}/ensemble"] == "ensemble" and kinds[f"{kdcl}/peer1"] == "peer"


def test_multi_teacher_weights_are_logged_per_epoch():
    from explorer.schemes.multi_teacher import CAMKD, _MultiTeacher
    me = types.SimpleNamespace(teacher_archs=["cnn_large", "cnn_small"])
    y = torch.tensor([0, 1, 2, 0])
    t = torch.stack([torch.eye(3)[y] * 9, torch.zeros(4, 3)])            # teacher 0 is right, teacher 1 unsure
    _MultiTeacher._record_weights(me, CAMKD.teacher_weights(me, t, y))
    w = _MultiTeacher.epoch_metrics(me)
    assert set(w) == {"teacher_weight/cnn_large", "teacher_weight/cnn_small"}
    assert sum(w.values()) == pytest.approx(1.0) and w["teacher_weight/cnn_large"] > 0.5
    assert _MultiTeacher.epoch_metrics(me) == {}                          # reset for the next epoch
    _MultiTeacher._record_weights(me, _MultiTeacher.teacher_weights(me, t, y))
    assert _MultiTeacher.epoch_metrics(me)["teacher_weight/cnn_small"] == pytest.approx(0.5)   # average: equal


def test_runs_table_names_scheme_methods_and_only_real_teachers():
    store = Store()
    bundled = teachers.TeacherRef("cnn_large", "bundled", str(teachers.BUNDLED / "abc123.pt"), test_acc=0.99)
    kd = completed(store, {"test_acc": 0.9, "teacher_acc": 0.99}, methods=["kd"], name="kd")
    store.update_run(kd, teacher_ref=bundled.to_json())
    ids = {s: completed(store, {"test_acc": 0.8}, scheme=s, methods=[], name=s) for s in ("dml", "byot")}
    df = R.runs_table(store).set_index("id")
    assert df.loc[ids["dml"], "methods"] == "dml" and df.loc[ids["byot"], "methods"] == "byot"   # not "none"
    assert df.loc[ids["dml"], "scheme"] == "dml"
    assert pd.isna(df.loc[ids["dml"], "teacher"]) and pd.isna(df.loc[ids["byot"], "teacher_acc"])   # had none
    assert df.loc[kd, "teacher"].startswith("cnn_large (bundled")        # the one it really used
    assert list(R.runs_table(store, methods=["dml"])["id"]) == [ids["dml"]]
    for scheme in ("dafl", "camkd"):
        run = {"config": {"scheme": scheme, "methods": []}, "methods": "none"}
        assert R.methods_label(run) == scheme


def test_runs_page_compares_the_last_launched_group_by_default():
    store = Store()
    old = completed(store, {"test_acc": 0.9, "teacher_acc": 0.99}, methods=["kd"], name="old")
    completed(store, {"test_acc": 0.8, "teacher_acc": 0.99}, methods=[], name="old · student alone")
    new = completed(store, {"test_acc": 0.91}, scheme="dml", methods=[], name="new")
    new_alone = completed(store, {"test_acc": 0.85}, methods=[], name="new · student alone")
    other = completed(store, {"test_acc": 0.7}, methods=[], name="something else", student="mlp_small")
    store.update_run(other, name="something else")
    assert set(R.default_compare(store)) in ({other}, {other, new_alone})   # the newest run heads the group
    store.delete_run(other)
    assert set(R.default_compare(store)) == {new, new_alone}
    at = page("2_Runs")
    assert not at.exception
    assert set(at.multiselect(key="runs.selected").value) == {new, new_alone}   # not the first two rows
    assert old not in at.multiselect(key="runs.selected").value


def test_runs_page_has_no_teacher_column_when_no_run_had_one():
    store = Store()
    completed(store, {"test_acc": 0.9}, scheme="dml", methods=[], name="dml")
    completed(store, {"test_acc": 0.8}, scheme="byot", methods=[], name="byot")
    at = page("2_Runs")
    assert not at.exception
    cols = list(at.dataframe[0].value.columns)
    assert "teacher" not in cols and "teacher_acc" not in cols and "scheme" in cols


def test_accuracy_bars_start_at_zero():
    fig = gap_bars([{"label": "a", "acc": 0.97, "kind": "teacher"}, {"label": "b", "acc": 0.95, "kind": "distilled"}])
    assert fig.layout.yaxis.range[0] == 0


def test_scheme_choices_are_select_boxes():
    def script():
        from explorer.app import widgets as W
        from explorer.schemes import get_scheme
        for h in get_scheme("crossmodal").hparams:
            W.hparam_widget(h, f"p.{h.name}")
    at = AppTest.from_function(script).run()
    assert not at.exception
    box = at.selectbox(key="p.student_view")
    assert list(box.options) == ["grayscale", "edges", "lowres"]


def test_figures_zip_has_html_and_each_runs_config():
    import plotly.graph_objects as go
    fig = go.Figure(go.Bar(x=["a"], y=[0.5]))
    run = {"id": "r1", "name": "kd run", "config": {"dataset": "digits", "methods": [{"key": "kd"}]},
           "summary": {"test_acc": 0.9}}
    data = X.figures_zip({"runs.gap": fig}, {"r1": run}, png=False)
    z = zipfile.ZipFile(io.BytesIO(data))
    names = set(z.namelist())
    assert {"runs.gap.html", "config-r1.yaml", "README.txt"} <= names
    html = z.read("runs.gap.html").decode()
    assert "<html" in html and "plotly" in html.lower() and len(html) > 100_000   # plotly.js inside: offline
    assert yaml.safe_load(z.read("config-r1.yaml"))["dataset"] == "digits"
    assert X.png_missing() is None or "PNG" in X.png_missing()
    one = X.figure_html(fig, {"r1": run})
    assert "Config of run r1" in one and "dataset: digits" in one     # the run's config alongside the figure


def test_every_chart_offers_html_and_the_page_a_zip():
    store = Store()
    completed(store, {"test_acc": 0.9, "teacher_acc": 0.99}, methods=["kd"], name="kd")
    at = page("2_Runs")
    assert not at.exception
    downloads = at.get("download_button")
    labels = [d.proto.label for d in downloads]
    assert "All figures of this page (zip)" in labels and labels.count("HTML") >= 2   # curves and the gap bars


def test_calibration_confusion_and_per_class_use_the_whole_test_split():
    from explorer.app.cache import _test_logits
    from explorer.engine.run import run
    store = Store()
    out = run(RunConfig(dataset="digits", student="cnn_tiny", teacher="cnn_large", n_train=100, epochs=1,
                        methods=[{"key": "kd"}]), store=store)
    r = store.get_run(out["run_id"])
    saved = _test_logits(str(Path(r["run_dir"]) / "test_logits.pt"), 0.0)
    n = len(saved["y"])
    assert n > 64 and saved["student"].shape == (n, 10) and saved["reference"].shape == (n, 10)
    acc = (saved["student"].argmax(1) == saved["y"]).float().mean().item()
    assert acc == pytest.approx(r["summary"]["test_acc"], abs=0.01)      # the same models the summary scored
    at = page("6_Logits_and_calibration")
    assert not at.exception
    assert any(f"whole test split** ({n} images)" in c.value for c in at.caption)

    # item 9 on the other pages, with a second real run to compare with
    run(RunConfig(dataset="digits", student="cnn_tiny", teacher="cnn_large", n_train=100, epochs=1, methods=[]),
        store=store)
    at = page("4_Feature_similarity")
    at.checkbox(key="cka.compare").check().run()
    assert not at.exception
    curves = [f for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
              if "over training" in f["layout"]["title"]["text"]]
    assert len(curves) == 1 and "both runs" in curves[0]["layout"]["title"]["text"]   # one chart, both runs
    names = {t["name"].split(" · ")[0] for t in curves[0]["data"]}
    assert len(names) == 2
    assert any("probe samples" in c.value for c in at.caption)            # explained where they are picked
    at = page("3_Attention_maps")
    assert not at.exception
    assert any("1 − cosine similarity" in c.value for c in at.caption)    # the gap, explained where shown


def test_train_page_has_no_teacher_picker_for_a_scheme_without_teacher():
    at = page("1_Train")
    assert at.radio(key="train.teacher_source") is not None                # offline: a teacher to pick
    at.selectbox(key="train.scheme").set_value("dml").run()
    assert not at.exception
    assert not [r for r in at.radio if r.key == "train.teacher_source"]    # DML: none
    assert any("learns without a teacher" in c.value for c in at.caption)
    at.selectbox(key="train.scheme").set_value("takd").run()
    assert [r for r in at.radio if r.key == "train.teacher_source"]


def test_each_scheme_shows_what_it_produced_on_the_runs_page():
    from explorer.analysis import save_probe
    from explorer.analysis.probes import probe_path
    store = Store()
    mt = completed(store, {"test_acc": 0.9, "teacher_acc": 0.98}, scheme="camkd", methods=[], name="camkd")
    for e, w in ((1, 0.6), (2, 0.7)):
        store.log_metrics(mt, "epoch", e, 2 * e, {"teacher_weight/cnn_large": w, "teacher_weight/cnn_small": 1 - w})
    df = completed(store, {"test_acc": 0.5, "teacher_acc": 0.98}, scheme="dafl", methods=[], name="dafl")
    synth = Path(store.get_run(df)["run_dir"]) / "synth.pt"
    synth.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": torch.randint(0, 255, (12, 1, 8, 8), dtype=torch.uint8), "labels": torch.arange(12) % 10,
                "classes": [str(i) for i in range(10)]}, synth)
    store.add_artifact(df, "synth", synth, "synthesised")
    cm = completed(store, {"test_acc": 0.8, "teacher_acc": 0.98}, scheme="crossmodal", methods=[{"key": "kd"}],
                   name="crossmodal", scheme_params={"student_view": "edges"})
    side = {"logits": torch.zeros(8, 10), "embedding": torch.zeros(8, 4), "stages": [torch.zeros(8, 2, 4, 4)],
            "stage_names": ["s0"]}
    save_probe(probe_path(store.get_run(cm)["run_dir"], 2), 2, torch.randn(8, 1, 8, 8), torch.arange(8),
               torch.arange(8), side, side)

    out = {rid: R.scheme_outputs(store, store.get_run(rid)) for rid in (mt, df, cm)}
    assert set(out[mt]) == {"weights"} and set(out[df]) == {"synth"} and set(out[cm]) == {"views"}
    assert out[cm]["views"]["view"].shape == (6, 1, 8, 8) and out[cm]["views"]["name"] == "edges"

    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page("pages/2_Runs.py").run()
    at.multiselect(key="runs.selected").set_value([mt, df, cm]).run()
    assert not at.exception
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("each teacher's weight over training" in t for t in titles)
    assert any("images its generator synthesised" in t for t in titles)
    assert any("what each model sees" in t for t in titles)


def test_png_export_where_kaleido_and_a_browser_are_installed():
    pytest.importorskip("kaleido")
    if X.png_missing() is not None:
        pytest.skip(X.png_missing())
    import plotly.graph_objects as go
    fig = go.Figure(go.Bar(x=["a"], y=[0.5]))
    assert X.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    z = zipfile.ZipFile(io.BytesIO(X.figures_zip({"gap": fig}, {})))
    assert {"gap.html", "gap.png"} <= set(z.namelist())
