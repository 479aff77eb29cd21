"""The Train page tells the truth and keeps it (issue 13, items 1-4 and 7): the live view comes from the store
(any session sees every queued and running run), live values are the newest record and say which, a run
training its own teacher shows that run's progress, the queue names runs, the run name follows the config
unless typed, and the form is checked on every change -- the message beside the field, naming widgets, with
Launch disabled and nothing submitted."""
import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.errors import AppTestError

from explorer import owners, presets, teachers
from explorer.app import form as F
from explorer.app.progress import live_ids, progress, queue_rows
from explorer.config import FIELD_SPECS, RunConfig
from explorer.recipes import resolve, teacher_recipe
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]


def app(page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def assert_no_exception(at: AppTest, where: str = ""):
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"


def queued(store: Store, **cfg) -> str:
    """A run as jobs.submit leaves it: resolved, queued for the cpu worker (none is started)."""
    config = resolve(dict(dict(dataset="digits", student="cnn_tiny", epochs=4, n_train=100, batch_size=20), **cfg))
    rid = store.create_run(config.to_dict(), status="queued")
    store.update_run(rid, device="cpu", queued_at=time.time())
    return rid


def running(store: Store, rid: str) -> str:
    store.set_status(rid, "running", **owners.fields())       # owned by this (live) process
    return rid


# ---------------------------------------------------------------------- 2: the newest of step and epoch values
def test_live_values_are_the_newest_of_step_and_epoch_records_and_say_which():
    store = Store()
    rid = running(store, queued(store, name="short", epochs=6))
    # a short run: one early logging window (epoch 1), then only epoch means
    store.log_metrics(rid, "step", 0, 3, {"loss": 2.0, "ce": 0.5, "kd": 1.5, "lr": 0.1, "images_per_s": 50.0})
    for e, loss in ((1, 1.6), (2, 1.1), (3, 0.7)):
        store.log_metrics(rid, "epoch", e, 5 * e, {"val/acc": 0.2 * e, "train/acc": 0.2 * e, "train/loss": loss,
                                                  "train/ce": loss / 4, "train/kd": 3 * loss / 4, "lr": 0.1,
                                                  "images_per_s": 900.0 + e, "epoch_seconds": 0.1})
    p = progress(store, rid)
    assert p["values_from"] == "epoch 3 mean"                       # not the frozen step record of epoch 1
    assert p["losses"] == {"loss": 0.7, "ce": 0.7 / 4, "kd": 3 * 0.7 / 4} and p["images_per_s"] == 903.0
    assert p["val_acc"] == pytest.approx(0.6) and p["epoch"] == 3

    store.log_metrics(rid, "step", 3, 17, {"loss": 0.5, "ce": 0.1, "kd": 0.4, "lr": 0.1, "images_per_s": 1000.0})
    p = progress(store, rid)                                        # a window newer than the last epoch
    assert p["values_from"] == "step 17" and p["losses"] == {"loss": 0.5, "ce": 0.1, "kd": 0.4}
    assert p["images_per_s"] == 1000.0 and p["step"] == 17 and p["steps"] == 30

    at = app("1_Train")                                             # the card says which it shows
    assert_no_exception(at)
    assert any("step 17" in c.value for c in at.caption)
    assert "step 17/30" in at.get("progress")[0].proto.text


# ---------------------------------------------------------------------- 1: the live view comes from the store
def test_a_fresh_session_shows_every_queued_and_running_run_with_cancel_from_the_store():
    store = Store()
    first = running(store, queued(store, name="first run", methods=["kd"]))
    store.log_metrics(first, "epoch", 1, 5, {"val/acc": 0.5, "train/acc": 0.4, "train/loss": 1.0, "train/kd": 0.8,
                                             "train/ce": 0.2, "images_per_s": 800.0})
    second = queued(store, name="second run")
    at = app("1_Train")                                             # a new tab: nothing in its session
    assert_no_exception(at)
    md = " ".join(m.value for m in at.markdown)
    assert "first run" in md and "second run" in md
    assert "epoch 1/4" in at.get("progress")[0].proto.text
    assert {"kd", "ce", "val acc", "images/s", "ETA"} <= {m.label for m in at.metric}
    assert any(t.get("name") == "first run" for f in at.get("plotly_chart")
               for t in json.loads(f.proto.spec)["data"])                        # the live curves
    table = at.dataframe[0].value
    assert list(table["run"]) == ["first run", "second run"] and list(table["#"]) == [1, 2]
    at.button(key=f"cancel.{second}").click().run()                 # a queued run: cancelled at once
    assert store.get_run(second)["status"] == "cancelled"
    at.button(key=f"cancel.{first}").click().run()                  # a running one: its trainer is asked
    assert store.cancel_requested(first)
    store.set_status(first, "cancelled", message="cancelled by the user")
    assert live_ids(store, at.session_state["active_runs"]) == [first, second]  # watched: still shown, finished
    assert live_ids(store) == []                                    # ... but not to a tab that never saw them


# ---------------------------------------------------------------------- 7: a run training its own teacher
def test_a_run_training_its_teacher_shows_that_runs_progress_and_the_queue_names_runs():
    store = Store()
    parent = running(store, queued(store, name="kd with a new teacher", methods=["kd"], teacher="cnn_medium",
                                   teacher_epochs=5))
    tcfg = teacher_recipe(RunConfig.from_dict(store.get_run(parent)["config"]))
    child = running(store, store.create_run(tcfg.to_dict(), status="queued"))   # as Trainer.train_teacher does
    teachers.record(store, parent, teachers.TeacherRef("cnn_medium", "train", run_id=child, epochs=5))
    store.log_metrics(child, "epoch", 1, 20, {"val/acc": 0.7, "train/acc": 0.6, "train/loss": 0.9,
                                              "train/ce": 0.9, "images_per_s": 500.0})
    store.log_metrics(child, "epoch", 2, 40, {"val/acc": 0.8, "train/acc": 0.7, "train/loss": 0.6,
                                              "train/ce": 0.6, "images_per_s": 510.0})
    waiting = queued(store, name="next in line")
    p = progress(store, parent)
    sub = p["sub"]
    assert sub is not None and sub["id"] == child and sub["what"] == "teacher" and sub["arch"] == "cnn_medium"
    assert sub["epoch"] == 2 and sub["epochs"] == 5 and sub["fraction"] == pytest.approx(0.4)
    assert sub["eta_s"] is not None and sub["values_from"] == "epoch 2 mean"
    assert "training its teacher cnn_medium first" in p["message"]

    rows = queue_rows(store)                                        # one row per run, named, one position each
    assert [r["run"] for r in rows] == ["kd with a new teacher", "next in line"]
    assert [r["#"] for r in rows] == [1, 2] and "teacher cnn_medium" in rows[0]["status"]
    assert live_ids(store) == [parent, waiting]                      # the teacher run is inside its parent's card

    at = app("1_Train")
    assert_no_exception(at)
    bar = at.get("progress")[0].proto.text
    assert bar.startswith("its teacher cnn_medium: epoch 2/5") and "40 %" in bar and "ETA –" not in bar

    # a teacher trained later in the same run (a second teacher): found as the running teacher run of
    # the same process, without a link
    teachers.record(store, parent, teachers.TeacherRef("cnn_medium", "run", run_id=child, test_acc=0.8))
    assert progress(store, parent)["sub"]["id"] == child


def test_the_trainer_links_a_teacher_it_trains_to_its_run_while_it_trains(monkeypatch):
    """Trainer.train_teacher records the sub-run on its parent (a "train" reference with the sub-run's id)
    as soon as the sub-run exists, so any reader finds it; the trained teacher's reference replaces it."""
    from explorer.engine.run import Trainer
    store = Store()
    seen = {}
    real_run = Trainer.run

    def spy(self, run_id=None, resume=False):
        if self.config.role == "teacher":
            parent = store.get_run(self.parent.run_id)
            seen["ref"], seen["child"] = teachers.of_run(parent), run_id
            seen["sub"] = progress(store, parent["id"])["sub"]
        return real_run(self, run_id, resume)
    monkeypatch.setattr(Trainer, "run", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = RunConfig(dataset="digits", student="cnn_tiny", teacher="cnn_tiny", teacher_epochs=1, epochs=1,
                    n_train=60, probe_size=0, probe_epochs=[], device="cpu", methods=["kd"])
    result = Trainer(cfg, store).run()
    assert result["status"] == "completed"
    assert seen["ref"].source == "train" and seen["ref"].run_id == seen["child"] is not None
    assert seen["sub"] is None or seen["sub"]["id"] == seen["child"]      # not running yet when it is linked
    final = teachers.of_run(store.get_run(result["run_id"]))
    assert final.source == "run" and final.run_id == seen["child"]


# ---------------------------------------------------------------------- 3: the name follows the config
def test_the_run_name_follows_the_config_unless_the_user_typed_one(submitted):
    preset = presets.preset_configs(presets.DEFAULT_PRESET)[0]
    at = app("1_Train")                                             # the default preset, prefilled
    assert at.text_input(key="train.name").value == preset["name"]
    at.selectbox(key="train.scheme").set_value("dml").run()
    name = at.text_input(key="train.name").value
    assert name != preset["name"] and name.startswith("dml")        # a DML run is not called a KD run
    at.button(key="train.launch").click().run()
    assert submitted[0]["scheme"] == "dml" and submitted[0]["name"] == name
    at.selectbox(key="train.scheme").set_value("offline").run()
    assert at.text_input(key="train.name").value == preset["name"]  # the preset's config again: its name
    at.multiselect(key="train.methods").set_value(["kd", "at"]).run()
    assert at.text_input(key="train.name").value.startswith("kd+at")
    at.text_input(key="train.name").input("my own name").run()      # typed: it sticks
    at.selectbox(key="train.scheme").set_value("dml").run()
    assert at.text_input(key="train.name").value == "my own name"
    n = len(submitted)
    at.button(key="train.launch").click().run()
    assert submitted[n]["name"] == "my own name" and submitted[n]["scheme"] == "dml"


# ---------------------------------------------------------------------- 4: checks before launch
def _fsp(at):
    at.multiselect(key="train.methods").set_value(["fsp"]).run()     # cnn_tiny vs cnn_large: unequal channels


def _missing_folder(at):
    at.selectbox(key="train.dataset").set_value("mnist").run()
    at.text_input(key="train.data_root").input(str(Store().home / "data" / "no-such-folder")).run()


def _zero_epochs(at):
    at.number_input(key="train.epochs").set_value(0).run()


@pytest.mark.parametrize("change,key,says", [
    (_fsp, "train.methods", "equal channel counts"),
    (_missing_folder, "train.data_root", "does not exist"),
    (_zero_epochs, "train.epochs", "got 0"),
])
def test_the_form_is_checked_before_launch(submitted, change, key, says):
    at = app("1_Train")
    assert not at.button(key="train.launch").disabled
    change(at)
    assert_no_exception(at)
    label = F.widget_label(key)
    errors = [e.value for e in at.error]
    assert any(e.startswith(label) and says in e for e in errors), errors          # beside the field, named
    assert not any("--" in e or "config field" in e for e in errors), errors       # widgets, not flags
    assert any(label in c.value and "Launch is off" in c.value for c in at.caption)
    assert at.button(key="train.launch").disabled
    with pytest.raises(AppTestError, match="disabled"):                           # as in a browser: no click
        at.button(key="train.launch").click()
    at.run()
    assert submitted == [] and Store().list_runs() == []                          # nothing submitted
    assert not [c for c in at.code if "dataset:" in c.value]                      # no config to rerun


def test_the_pairing_check_is_the_methods_own_and_the_engine_uses_it():
    from explorer.config import ConfigError
    from explorer.kd import get_method
    with pytest.raises(ConfigError) as e:
        resolve(dict(dataset="digits", methods=["fsp"]))                         # what jobs.submit calls
    assert e.value.field == "methods[0]" and "equal channel counts" in str(e.value)
    resolve(dict(dataset="digits", methods=["fsp"], student="cnn_large"))        # an equal-width pair passes
    with pytest.raises(ConfigError, match="hint_stage=4"):
        resolve(dict(dataset="digits", methods=[{"key": "fitnet", "params": {"hint_stage": 4}}]))
    with pytest.raises(ConfigError) as e:
        resolve(dict(dataset="mnist", data_root="/no/such/folder"))
    assert e.value.field == "data_root" and "does not exist" in str(e.value)
    from explorer.kd.base import PairContext
    ctx = PairContext(((8, 8, 8), (16, 4, 4)), ((8, 8, 8), (32, 4, 4)), 8, 8, 10, 100, 1, 1)
    with pytest.raises(ValueError, match="equal channel counts") as built:
        get_method("fsp")(ctx)                                                   # the constructor: the same check
    with pytest.raises(ValueError) as checked:
        get_method("fsp").check_pair(ctx)
    assert str(built.value) == str(checked.value)


# ---------------------------------------------------------------------- messages name widgets
def test_messages_name_widgets_not_cli_flags():
    from explorer.errors import ConfigError
    text = ("the loss diverged. Fix: lower --lr (the digits recipe uses 0.1) or the method weights, or turn off "
            "AMP. Out of memory: lower --batch-size, or use --device cpu; start `kd-explorer app --data-root DIR`.")
    out = F.name_widgets(text)
    assert "--lr" not in out and "--batch-size" not in out and "--device" not in out and "AMP" not in out
    assert f"“{FIELD_SPECS['lr'].label}”" in out and f"“{FIELD_SPECS['batch_size'].label}”" in out
    assert "“Device” = cpu" in out and "`kd-explorer app --data-root DIR`" in out      # a command stays one
    state = {"train.methods": ["kd", "at"], "train.scheme": "offline"}
    e = ConfigError("methods[1].params.p", "must be a finite number at least 0.5 and at most 8, got 0")
    assert F.widget_key(e.field, state) == "train.hp.at.p" and F.browser_message(e, state).startswith("at p: ")
    assert F.browser_message(ConfigError("epochs", "too few"), state) == \
        f"{FIELD_SPECS['epochs'].label} (`epochs`): too few"

    store = Store()                                                  # a failed run's card says it the same way
    rid = queued(store, name="diverged")
    store.set_status(rid, "failed", message=text)
    at = app("1_Train", active_runs=[rid])
    warning = " ".join(w.value for w in at.warning)
    assert "Learning rate" in warning and "--lr" not in warning and "AMP" not in warning


def test_a_typed_out_of_range_value_reaches_the_check():
    """The widgets carry no min/max (a browser would keep an out-of-range value to itself and the server
    keep the old one); the range is in the help, and the form's check names the widget."""
    at = app("1_Train")
    w = at.number_input(key="train.n_train")
    assert w.min is None or w.min < FIELD_SPECS["n_train"].low
    w.set_value(5).run()
    assert at.session_state["train.n_train"] == 5
    assert any(e.value.startswith(FIELD_SPECS["n_train"].label) for e in at.error)
    at.number_input(key="train.n_train").set_value(200).run()
    assert not at.error and not at.button(key="train.launch").disabled
