"""The Streamlit app under streamlit.testing's AppTest: every page renders, menus come from the registries,
widgets drive the config handed to jobs.submit, live progress reads the store, uploads are checked, and a
preset launched from Home runs on the real worker and its figures reach every analysis page."""
import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from streamlit.testing.v1 import AppTest

from explorer import jobs, presets, teachers
from explorer.app import analysis as A
from explorer.app import form as F
from explorer.app import runs as R
from explorer.app.progress import progress
from explorer.config import RunConfig
from explorer.data import list_datasets
from explorer.kd import list_methods
from explorer.models import create_model, list_models
from explorer.recipes import resolve
from explorer.schemes import list_schemes
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
ANALYSIS = ["3_Attention_maps", "4_Feature_similarity", "5_Relation_matrices", "6_Logits_and_calibration",
            "7_Embeddings"]
PAGES = ["1_Train", "2_Runs"] + ANALYSIS + ["8_Benchmark", "9_Language_models"]
TINY = dict(n_train=100, epochs=2)     # the bundled digits teacher is reused: no teacher training


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def assert_clean(at: AppTest, where: str = ""):
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def traces(at: AppTest) -> list[dict]:
    return [t for f in figures(at) for t in f["data"]]


@pytest.fixture
def workers(monkeypatch):
    """Real worker processes, one thread each (the machine is shared); any left alive are stopped."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("KD_EXPLORER_WORKER_IDLE_S", "1.5")
    yield
    store = Store()
    for lock in (store.home / "workers").glob("*.lock"):
        pid = jobs._lock_holder(store.home, lock.stem)
        if pid:
            os.kill(pid, signal.SIGKILL)


def fake_completed_run(store: Store, **cfg) -> str:
    config = RunConfig.from_dict(dict(dict(dataset="digits", student="cnn_tiny", teacher="cnn_large", epochs=2), **cfg))
    rid = store.create_run(config.to_dict(), status="queued")
    store.log_metrics(rid, "epoch", 1, 2, {"val/acc": 0.5, "train/loss": 1.0})
    store.log_metrics(rid, "epoch", 2, 4, {"val/acc": 0.7, "train/loss": 0.6})
    store.set_status(rid, "completed", summary={"test_acc": 0.8, "teacher_acc": 0.99})
    return rid


# ---------------------------------------------------------------------- rendering, menus, presets
def test_every_page_renders_on_an_empty_store():
    at = app()
    assert_clean(at, "Home")
    labels = [b.label for b in at.button]
    assert any(p["title"] in label for p in presets.list_presets() for label in labels)
    sunburst = next(t for t in traces(at) if t["type"] == "sunburst")
    assert set(list_methods()) | set(list_schemes()) <= set(sunburst["labels"])     # the map is the registries
    playground = next(f for f in figures(at) if "softened" in f["layout"]["title"]["text"])
    assert any(t["type"] == "bar" for t in playground["data"])                      # the bundled teacher's outputs
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert_clean(at, page)
        if page in ANALYSIS:
            assert any("No finished run" in i.value for i in at.info), page


def test_home_declares_the_navigation_over_every_page_file_and_links_target_declared_pages():
    """Home.py only declares st.navigation over the files in pages/; every st.page_link / st.switch_page
    target written in a page or in explorer/app is one of them (test_every_page_renders_on_an_empty_store
    visits each through Home.py, as a browser does)."""
    declared = re.findall(r'st\.Page\("(pages/[^"]+)"', (REPO / "Home.py").read_text())
    assert declared == [f"pages/{p}.py" for p in ["0_Welcome"] + PAGES]
    assert sorted(p.name for p in (REPO / "pages").glob("*.py")) == sorted(Path(p).name for p in declared)
    sources = list((REPO / "pages").glob("*.py")) + list((REPO / "explorer" / "app").glob("*.py"))
    targets = {t for f in sources for t in re.findall(r'"(pages/\w+\.py)"', f.read_text())}
    assert targets and targets <= set(declared)
    for page in ("0_Welcome", "1_Train"):      # pages that link nowhere on an empty store also run as plain scripts
        assert_clean(AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=180).run(), page)


def test_train_widgets_take_label_help_and_bounds_from_the_field_specs():
    from explorer.config import FIELD_SPECS
    at = app("1_Train")
    for name in ("epochs", "n_train", "seed", "lr"):
        w, h = at.number_input(key=f"train.{name}"), FIELD_SPECS[name]
        assert w.label == h.label and h.help in w.help, name
        assert h.range_text() in w.help, name       # the range is shown; it is checked with the form (no widget
        # min/max: a browser keeps an out-of-range value to itself, see test_the_form_is_checked_before_launch)
    assert at.selectbox(key="train.dataset").label == FIELD_SPECS["dataset"].label
    assert at.multiselect(key="train.methods").label == FIELD_SPECS["methods"].label


def test_train_menus_come_from_the_registries():
    at = app("1_Train")
    assert_clean(at)
    key = lambda opts: [o.split(" — ")[0] for o in opts]   # noqa: E731  (labels are "key — name (category)")
    assert key(at.selectbox(key="train.dataset").options) == list_datasets()
    assert key(at.selectbox(key="train.scheme").options) == list_schemes()
    assert key(at.selectbox(key="train.student").options) == list_models()
    assert key(at.multiselect(key="train.methods").options) == list_methods()
    # the default experiment is prefilled: digits, KD, a short budget
    assert at.multiselect(key="train.methods").value == ["kd"]
    assert at.number_input(key="train.epochs").value == presets.get_preset(presets.DEFAULT_PRESET)["config"]["epochs"]
    assert "(default 4)" in at.number_input(key="train.hp.kd.temperature").label


def test_the_map_opens_any_method_on_the_train_page_prefilled():
    at = app()
    options = at.selectbox(key="home.pick").options
    assert len(options) == len(list_methods()) + len(list_schemes())
    at.selectbox(key="home.pick").set_value(next(i for i, o in enumerate(options) if o.startswith("rkd — "))).run()
    at.button(key="home.try").click().run()
    assert_clean(at)
    assert at.multiselect(key="train.methods").value == ["rkd"]           # we are on Train, prefilled
    assert at.number_input(key="train.hp.rkd.angle_weight").value == 50.0


def test_train_choices_survive_a_visit_to_another_page():
    at = app("1_Train")
    at.number_input(key="train.epochs").set_value(7)
    at.multiselect(key="train.methods").set_value(["dkd"]).run()
    at.number_input(key="train.hp.dkd.beta").set_value(2.0).run()
    at.switch_page("pages/2_Runs.py").run()
    at.switch_page("pages/1_Train.py").run()
    assert at.number_input(key="train.epochs").value == 7
    assert at.multiselect(key="train.methods").value == ["dkd"]
    assert at.number_input(key="train.hp.dkd.beta").value == 2.0


def test_presets_are_valid_configs_and_unregistered_ones_are_hidden(monkeypatch):
    listed = [p["key"] for p in presets.list_presets()]
    assert listed[0] == presets.DEFAULT_PRESET and {"attention", "relational"} <= set(listed)
    for key in listed:
        for cfg in presets.preset_configs(key):
            resolve(cfg)                   # the one validation the form makes (form.launchable)
    monkeypatch.setitem(presets._PRESETS, "future", dict(key="future", title="t", look_for="", compare=None,
                                                        compare_label="", config=dict(scheme="not-yet", methods=[])))
    assert "future" not in [p["key"] for p in presets.list_presets()]
    with pytest.raises(KeyError):
        presets.get_preset("future")


def test_form_state_round_trips_a_config():
    cfg = dict(dataset="digits", student="cnn_small", epochs=3, n_train=200, seed=4, name="x",
               methods=[{"key": "kd", "params": {"temperature": 8.0}}, {"key": "at", "weight": 500.0}])
    back = F.config_from_form(F.form_state(cfg))
    assert back["methods"] == cfg["methods"]
    assert {k: back[k] for k in ("dataset", "student", "epochs", "n_train", "seed", "name")} == \
           {k: cfg[k] for k in ("dataset", "student", "epochs", "n_train", "seed", "name")}
    assert "teacher" not in back and back["scheme_params"] == {}
    for key in [p["key"] for p in presets.list_presets()]:
        main = presets.preset_configs(key)[0]
        again = F.config_from_form(F.form_state(main))
        assert again["scheme"] == main.get("scheme", "offline") and again["epochs"] == main["epochs"]
        assert [m["key"] for m in again["methods"]] == [m["key"] for m in main["methods"]]


# ---------------------------------------------------------------------- widgets -> submit
def test_train_widgets_drive_the_config_passed_to_submit(submitted):
    at = app("1_Train")
    at.multiselect(key="train.methods").set_value(["kd", "at"]).run()
    assert_clean(at)
    assert at.number_input(key="train.hp.at.p").value == 2               # hyperparameter widgets of the method
    at.number_input(key="train.hp.kd.temperature").set_value(8.0)
    at.number_input(key="train.w.at").set_value(500.0)
    at.number_input(key="train.epochs").set_value(3)
    at.button(key="train.launch").click().run()
    assert_clean(at)
    main, alone = submitted
    assert main["methods"] == [{"key": "kd", "weight": None, "params": {"temperature": 8.0}},
                               {"key": "at", "weight": 500.0, "params": {}}]
    assert main["epochs"] == 3 and main["dataset"] == "digits"
    assert alone["methods"] == [] and alone["scheme"] == "offline" and alone["epochs"] == 3   # the comparison run
    assert at.session_state["active_runs"] and len(at.session_state["active_runs"]) == 2

    at.selectbox(key="train.scheme").set_value("dml").run()               # a scheme with its own losses
    assert_clean(at)
    assert not [m for m in at.multiselect if m.key == "train.methods"]    # knowledge terms do not apply
    at.number_input(key="train.sp.dml.peers").set_value(3)
    at.checkbox(key="train.compare").uncheck()
    at.button(key="train.launch").click().run()
    dml = submitted[-1]
    assert len(submitted) == 3 and dml["scheme"] == "dml" and dml["scheme_params"] == {"peers": 3}
    assert dml["methods"] == []


def test_a_bad_value_is_named_and_launch_is_disabled(submitted):
    at = app("1_Train")
    at.radio(key="train.teacher_source").set_value("upload").run()       # no checkpoint uploaded yet
    assert any("checkpoint" in e.value for e in at.error)
    assert at.button(key="train.launch").disabled


def test_data_folder_box_reads_only_the_allowed_roots(tmp_path, submitted):
    """A server folder outside the allow-list is refused before it is read; the error names the allowed
    roots, never what the server's folders hold. A folder under <home>/data launches."""
    from PIL import Image
    home = Path(os.environ["KD_EXPLORER_HOME"])
    at = app("1_Train")
    at.selectbox(key="train.dataset").set_value("folder").run()
    at.text_input(key="train.data_root").set_value("/").run()
    errors = " ".join(e.value for e in at.error)
    assert "data_root" in errors and str((home / "data").resolve()) in errors
    assert not any(name in errors for name in ("'bin'", "'etc'", "'usr'"))   # no listing of the server's folders
    assert at.button(key="train.launch").disabled
    for cls, colour in (("cats", (200, 20, 20)), ("dogs", (20, 20, 200))):
        (home / "data" / "pets" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), colour).save(home / "data" / "pets" / cls / f"{i}.png")
    at.text_input(key="train.data_root").set_value(str(home / "data" / "pets")).run()
    assert not at.button(key="train.launch").disabled, [e.value for e in at.error]
    at.button(key="train.launch").click().run()
    assert submitted and submitted[0]["data_root"] == str(home / "data" / "pets")


def test_uploaded_teacher_is_checked_loaded_weights_only_and_saved_under_a_safe_name(tmp_path, submitted):
    import io
    teacher = create_model("cnn_large", num_classes=10, in_channels=1, image_size=8)
    good = io.BytesIO()
    torch.save(teacher.state_dict(), good)
    at = app("1_Train")
    at.radio(key="train.teacher_source").set_value("upload").run()
    at.get("file_uploader")[0].upload("../../my teacher;rm -rf.pt", good.getvalue()).run()
    assert_clean(at)
    path = Path(at.session_state["train.teacher_ckpt"])
    assert path.parent == Store().home / "uploads" / "checkpoint" and path.is_file()
    assert re.fullmatch(r"my-teacher-rm--rf-[0-9a-f]{8}\.pt", path.name)   # sanitised; stays in the store home
    at.button(key="train.launch").click().run()
    assert submitted[0]["teacher_ckpt"] == str(path) and submitted[0]["teacher"] == "cnn_large"

    marker = tmp_path / "pwned"

    class Evil:   # a pickle that would run a command if it were ever unpickled with full pickle
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    evil = io.BytesIO()
    torch.save({"weight": Evil()}, evil)
    at.get("file_uploader")[0].set_value(("evil.pt", evil.getvalue(), "application/octet-stream")).run()
    assert any("refused" in e.value for e in at.error) and not marker.exists()
    assert "train.teacher_ckpt" not in at.session_state
    small = io.BytesIO()
    torch.save(create_model("cnn_tiny", num_classes=10, in_channels=1, image_size=8).state_dict(), small)
    at.get("file_uploader")[0].set_value(("tiny.pt", small.getvalue(), "application/octet-stream")).run()
    assert any("does not fit" in e.value for e in at.error)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]   # refused files removed
    with pytest.raises(ValueError, match="not a .pt"):
        F.save_upload(Store(), "model.py", b"import os", "cnn_large", "digits")


def test_a_finished_run_or_a_new_architecture_can_be_the_teacher(submitted):
    from explorer.checkpoints import load_checkpoint_into
    store = Store()
    rid = fake_completed_run(store, student="cnn_small", name="small")
    model_pt = Path(store.get_run(rid)["run_dir"]) / "model.pt"
    torch.save({"student": create_model("cnn_small", 10, 1, 8).state_dict()}, model_pt)   # the trainer's layout
    store.add_artifact(rid, "model", model_pt, "state_dict")
    at = app("1_Train")
    at.radio(key="train.teacher_source").set_value("run").run()
    assert at.selectbox(key="train.teacher_run").value == rid
    at.button(key="train.launch").click().run()
    assert_clean(at)
    cfg = submitted[0]
    assert cfg["teacher"] == "cnn_small" and Path(cfg["teacher_ckpt"]).parent == store.home / "teachers"
    load_checkpoint_into(create_model("cnn_small", 10, 1, 8), cfg["teacher_ckpt"])   # what the trainer will do

    at.radio(key="train.teacher_source").set_value("train").run()
    at.selectbox(key="train.teacher").set_value("cnn_medium")
    at.number_input(key="train.teacher_epochs").set_value(5)
    at.button(key="train.launch").click().run()
    cfg = submitted[-1]
    assert cfg["teacher"] == "cnn_medium" and cfg["teacher_epochs"] == 5 and cfg["teacher_ckpt"] is None


# ---------------------------------------------------------------------- live progress
def test_live_progress_reads_losses_accuracy_speed_and_eta_from_the_store():
    store = Store()
    cfg = RunConfig.from_dict(dict(dataset="digits", methods=["kd"], epochs=4, n_train=100, batch_size=20))
    rid = store.create_run(cfg.to_dict(), status="queued")
    store.set_status(rid, "running", worker_pid=os.getpid())      # "trained" by this process: alive, not recovered
    store.log_metrics(rid, "epoch", 1, 5, {"val/acc": 0.61, "train/acc": 0.5, "train/loss": 1.2, "images_per_s": 900})
    store.log_metrics(rid, "step", 1, 7, {"loss": 1.1, "ce": 0.1, "kd": 1.0, "lr": 0.05, "images_per_s": 1000.0})
    p = progress(store, rid)
    assert p["fraction"] == pytest.approx(7 / 20) and p["epoch"] == 1
    assert p["losses"] == {"loss": 1.1, "ce": 0.1, "kd": 1.0} and p["val_acc"] == 0.61
    assert p["images_per_s"] == 1000.0 and p["eta_s"] is not None and p["eta_s"] >= 0

    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180)
    at.session_state["active_runs"] = [rid]
    at.run().switch_page("pages/1_Train.py").run()
    assert_clean(at)
    bar = at.get("progress")[0]
    assert "epoch 1/4" in bar.proto.text and "ETA" in bar.proto.text
    assert {"kd", "ce", "val acc", "images/s"} <= {m.label for m in at.metric}
    at.button(key=f"cancel.{rid}").click().run()                          # the cancel button reaches the store
    assert store.cancel_requested(rid)


def test_sample_picking_and_the_gap_closed():
    y = torch.tensor([0, 1, 1, 2, 1])
    t = torch.eye(3)[y] * 5
    s = t.clone()
    s[3] = torch.tensor([5.0, 0, 0])                                       # the student gets sample 3 wrong
    probe = {"y": y, "teacher": {"logits": t}, "student": {"logits": s}}
    assert A.sample_positions(probe, "all").tolist() == [0, 1, 2, 3, 4]
    assert A.sample_positions(probe, "class", 1, k=2).tolist() == [1, 2]
    assert A.sample_positions(probe, "index", [4, 9, 0]).tolist() == [4, 0]   # out of range dropped
    assert A.sample_positions(probe, "disagree", k=1).tolist() == [3]
    rows = [{"kind": "teacher", "acc": 0.99}, {"kind": "distilled", "acc": 0.97},
            {"kind": "student alone", "acc": 0.95}]
    assert R.gap_closed(rows) == pytest.approx(0.5)
    assert R.gap_closed(rows[:2]) is None


def _probe_with_stages(student_shapes, teacher_shapes, n=4):
    side = lambda shapes, who: {"logits": torch.zeros(n, 10), "embedding": torch.zeros(n, 8),  # noqa: E731
                                "stages": [torch.zeros(n, *sh) for sh in shapes],
                                "stage_names": [f"{who}{i}" for i in range(len(shapes))]}
    return {"epoch": 1, "x": torch.zeros(n, 1, 8, 8), "y": torch.zeros(n, dtype=torch.long),
            "index": torch.arange(n), "student": side(student_shapes, "s"), "teacher": side(teacher_shapes, "t")}


def test_stage_pairs_label_what_the_methods_distilled_with_unequal_stage_counts():
    from explorer.kd import get_method
    from explorer.kd.base import PairContext
    s_shapes = [(8, 8, 8), (8, 8, 8), (16, 4, 4), (32, 2, 2)]                          # stem + 3 stages
    t_shapes = [(16, 8, 8), (16, 8, 8), (32, 8, 8), (32, 4, 4), (64, 4, 4), (64, 2, 2)]  # stem + 5 stages
    probe = _probe_with_stages(s_shapes, t_shapes)
    names = lambda pairs: [(f"s{i}", f"t{j}") for i, j in pairs]   # noqa: E731
    ctx = lambda pairs=None: PairContext(tuple(s_shapes), tuple(t_shapes), 8, 8, 10, 100, 1, 1, pairs)  # noqa: E731
    at = get_method("at")(ctx())
    run = {"config": {"stage_pairs": None}, "summary": {"test_acc": 0.9}}   # a run from before summaries had pairs
    assert A.stage_pair_indices(probe, run) == list(at.pairs) and len(at.pairs) == 3     # the stem is not paired
    assert A.stage_pairs(probe, run) == names(at.pairs)
    assert A.stage_pairs(probe) == names(at.pairs)

    explicit = [[1, 1], [3, 4]]                                                         # the config's override
    at_explicit = get_method("at")(ctx(tuple(tuple(p) for p in explicit)))
    assert A.stage_pairs(probe, {"config": {"stage_pairs": explicit}, "summary": {}}) == names(at_explicit.pairs)

    sp = get_method("sp")(ctx())                                                        # the deepest pair only
    recorded = {"config": {}, "summary": {"stage_pairs": {"sp": [list(p) for p in sp.pairs], "kd": []}}}
    assert A.stage_pairs(probe, recorded) == names(sp.pairs) == [("s3", "t5")]           # what the run recorded
    both = {"config": {}, "summary": {"stage_pairs": {"at": [list(p) for p in at.pairs],
                                                      "sp": [list(p) for p in sp.pairs]}}}
    assert A.stage_pair_indices(probe, both) == sorted(set(at.pairs) | set(sp.pairs))


def test_each_run_is_compared_with_its_own_teacher():
    from explorer.plots.app_extras import gap_bars
    store = Store()
    bundled = teachers.TeacherRef("cnn_large", "bundled", str(teachers.BUNDLED / "abc123.pt"), test_acc=0.99)
    trained = teachers.TeacherRef("cnn_large", "run", run_id="20260101-000000-feed01", test_acc=0.95)
    a = fake_completed_run(store, methods=["kd"], name="a")
    b = fake_completed_run(store, methods=["kd"], name="b")
    c = fake_completed_run(store, methods=[], name="c")
    store.update_run(a, teacher_ref=bundled.to_json(), summary={"test_acc": 0.90, "teacher_acc": 0.99})
    store.update_run(b, teacher_ref=trained.to_json(), summary={"test_acc": 0.93, "teacher_acc": 0.95})
    store.update_run(c, teacher_run="bundled:abc123.pt", summary={"test_acc": 0.85, "teacher_acc": 0.99})  # old store
    assert teachers.of_run(store.get_run(c)) == teachers.TeacherRef("cnn_large", "bundled", bundled.path)
    rows = R.gap_rows(store, [a, b, c])
    trows = [r for r in rows if r["kind"] == "teacher"]
    assert [r["acc"] for r in trows] == [0.99, 0.95]                     # two teachers: one per teacher, not per run
    assert len({r["label"] for r in trows}) == 2                         # same architecture, told apart
    by_id = {r["id"]: r for r in rows if r["kind"] != "teacher"}
    own = {r["acc"]: r["label"] for r in trows}
    assert by_id[a]["teacher"] == own[0.99] and by_id[a]["teacher_acc"] == 0.99
    assert by_id[b]["teacher"] == own[0.95] and by_id[b]["teacher_acc"] == 0.95   # not the first teacher found
    assert by_id[c]["teacher"] == own[0.99]                               # the old 'bundled:' string, same file
    texts = {t["x"][0]: t["text"][0] for t in gap_bars(rows).to_dict()["data"]}
    assert texts[by_id[b]["label"]].endswith("-2.0 pts")                 # 0.93 against 0.95, its own teacher
    assert texts[by_id[a]["label"]].endswith("-9.0 pts")
    assert R.gap_closed([r for r in rows if r.get("id") != a]) == pytest.approx((0.93 - 0.85) / (0.95 - 0.85))


def test_cached_results_follow_the_probe_file(tmp_path):
    from explorer.analysis import cka_matrix, save_probe
    from explorer.app import cache as C
    probe = _probe_with_stages([(4, 4, 4), (8, 2, 2)], [(4, 4, 4), (8, 2, 2)], n=8)
    for side in ("student", "teacher"):
        probe[side]["stages"] = [torch.randn_like(f) for f in probe[side]["stages"]]
    path = tmp_path / "probe_epoch001.pt"

    def write(p):
        save_probe(path, 1, p["x"], p["y"], p["index"], p["student"], p["teacher"])
    write(probe)
    loaded = C.probe(path)
    sub = A.subset(loaded, [0, 2, 3, 5, 7])
    assert sub["path"] == str(path) and sub["positions"] == (0, 2, 3, 5, 7)
    want = cka_matrix(sub["teacher"], sub["student"])
    assert C.cka(sub).equals(want)
    probe["student"]["stages"] = [torch.randn_like(f) for f in probe["student"]["stages"]]
    write(probe)                                                          # rewritten: a new mtime, read again
    os.utime(path, (loaded["mtime"] + 5, loaded["mtime"] + 5))
    again = A.subset(C.probe(path), [0, 2, 3, 5, 7])
    assert not C.cka(again).equals(want)
    assert C.cka(again).equals(cka_matrix(again["teacher"], again["student"]))


# ---------------------------------------------------------------------- runs page
def test_runs_page_filters_exports_and_deletes_with_confirmation():
    store = Store()
    kd = fake_completed_run(store, methods=["kd"], name="with kd")
    alone = fake_completed_run(store, methods=[], name="alone")
    at = app("2_Runs")
    assert_clean(at)
    assert len(at.dataframe[0].value) == 2
    assert set(at.multiselect(key="runs.selected").value) == {kd, alone}     # completed runs preselected
    assert any(t.get("name") == "student alone" for t in traces(at))         # the gap chart
    assert any(t["type"] == "scatter" for t in traces(at))                    # the curves
    at.multiselect(key="runs.method").set_value(["kd"]).run()
    assert list(at.dataframe[0].value["id"]) == [kd]
    assert at.multiselect(key="runs.selected").options == [f"with kd [{kd[-6:]}] · completed"]
    at.multiselect(key="runs.method").set_value([]).run()

    csv = R.metrics_csv(store, [kd]).decode()
    assert csv.splitlines()[0].startswith("run_id,scope,epoch") and "val/acc" in csv
    assert RunConfig.from_dict(yaml.safe_load(R.configs_yaml(store, [kd]))).methods[0].key == "kd"

    at.multiselect(key="runs.selected").set_value([alone]).run()
    at.button(key="runs.delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert len(store.list_runs()) == 2                                     # nothing deleted before confirming
    run_dir = Path(store.get_run(alone)["run_dir"])
    at.button(key="runs.delete.yes").click().run()
    assert_clean(at)
    assert [r["id"] for r in store.list_runs()] == [kd] and not run_dir.exists()


# ---------------------------------------------------------------------- the real path, end to end
def test_one_click_on_a_preset_queues_it_and_its_comparison_and_opens_train(submitted):
    at = app()
    at.button(key="preset.run.relational").click().run()
    assert_clean(at)
    want = [RunConfig.from_dict(c).to_dict() for c in presets.preset_configs("relational")]
    assert submitted == want and len(want) == 2
    assert at.multiselect(key="train.methods").value == ["rkd"]           # on Train, showing what runs
    assert len(at.session_state["active_runs"]) == 2


def test_a_run_launched_from_train_completes_on_the_worker_and_fills_every_analysis_page(workers):
    at = app("1_Train")                                                   # the default experiment, made tiny
    for name, value in TINY.items():
        at.number_input(key=f"train.{name}").set_value(value)
    at.button(key="train.launch").click().run()
    assert_clean(at, "after the click")
    ids = at.session_state["active_runs"]
    assert len(ids) == 2
    store = Store()
    for rid in ids:
        run = jobs.wait(rid, timeout=300, store=store)
        assert run["status"] == "completed", run["message"]
        assert run["worker_pid"] != os.getpid()                           # trained by the worker process
    assert store.get_run(ids[0])["config"]["methods"][0]["key"] == "kd"
    at.switch_page("pages/1_Train.py").run()
    assert_clean(at, "Train")
    gap = next(f for f in figures(at) if "gap" in f["layout"]["title"]["text"])
    assert [t["name"] for t in gap["data"]] == ["teacher", "distilled", "student alone"]

    expect = {   # page -> a trace every figure set must hold
        "3_Attention_maps": lambda ts: {"teacher", "student", "student − teacher"} <= {t.get("name") for t in ts},
        "4_Feature_similarity": lambda ts: any(t["type"] == "heatmap" and t.get("zmax") == 1.0 for t in ts),
        "5_Relation_matrices": lambda ts: {"teacher", "student", "student − teacher"} <= {t.get("name") for t in ts},
        "6_Logits_and_calibration": lambda ts: "perfect calibration" in {t.get("name") for t in ts},
        "7_Embeddings": lambda ts: sum(t["type"] == "scatter" for t in ts) >= 2 * 2,
    }
    for page, check in expect.items():
        at.switch_page(f"pages/{page}.py").run()
        assert_clean(at, page)
        assert at.selectbox[0].value == ids[0]                             # the distilled run is shown first
        assert check(traces(at)), page
    at.switch_page("pages/3_Attention_maps.py").run()
    at.radio(key="att.kind").set_value("gradcam").run()                   # rebuilt models, captum
    assert_clean(at, "Grad-CAM")
    assert any(t.get("name") == "student − teacher" for t in traces(at))
    at.switch_page("pages/4_Feature_similarity.py").run()
    at.checkbox(key="cka.within").check().run()                           # teacher x teacher, student x student
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert any("student × student" in t for t in titles) and any("teacher × teacher" in t for t in titles)
    at.switch_page("pages/3_Attention_maps.py").run()
    compare = [f for f in figures(at) if "student alone" in f["layout"]["title"]["text"]]   # alone vs distilled
    assert len(compare) == 1 and len([t for t in compare[0]["data"] if t["type"] == "heatmap"]) >= 3
