"""Issue 13, item 7 (rest): while a run trains its assistant (TAKD) or synthesises its images (DeepInversion)
-- a loop of the scheme's own, before the student's first step -- its card says so, with that phase's own
progress and ETA (RunContext.progress -> scope "phase" metrics -> explorer.app.progress), not
"epoch 0/10 · 0 % · ETA –"."""
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import owners
from explorer.app.progress import progress, progress_text
from explorer.config import RunConfig
from explorer.engine import loop
from explorer.engine.run import Trainer
from explorer.recipes import resolve
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]


def short(scheme: str, **params) -> RunConfig:
    # the bundled digits teacher (cnn_large, its recipe's settings): reused, nothing trains first
    return RunConfig(dataset="digits", student="cnn_tiny", teacher="cnn_large", scheme=scheme, scheme_params=params,
                     epochs=1, n_train=120, batch_size=20, probe_size=0, probe_epochs=[], device="cpu",
                     methods=["kd"] if scheme == "takd" else [])


def run_and_look(cfg: RunConfig, monkeypatch) -> tuple[dict, list[dict]]:
    """Train `cfg` for real; at each phase record (recorded at once: no throttle) look at progress()."""
    monkeypatch.setattr(loop, "LOG_EVERY_S", 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store, seen = Store(), []

    def look(e):
        if e.kind == "phase" and 0 < e.values["done"] < e.values["total"]:
            seen.append(progress(store, e.run_id))
    result = Trainer(cfg, store, on_event=look).run()
    assert result["status"] == "completed"
    return result, seen


def test_a_takd_run_shows_its_assistants_own_progress_and_eta(monkeypatch):
    result, seen = run_and_look(short("takd", assistant="cnn_small", assistant_epochs=2), monkeypatch)
    assert len(seen) >= 3
    steps = 2 * 6                              # 2 epochs of 120 / 20 images
    fractions = [p["sub"]["fraction"] for p in seen]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] < 1
    p = seen[-1]
    sub = p["sub"]
    assert sub["what"] == "assistant" and sub["arch"] == "cnn_small" and sub["epochs"] == 2
    assert sub["steps"] == steps and sub["eta_s"] is not None and "loss" in sub["losses"]
    assert p["message"].startswith("distilling its assistant cnn_small from the teacher first")
    assert "then the student (1 epochs)" in p["message"]
    text = progress_text(sub)
    assert text.startswith(f"epoch {sub['epoch']}/2 · step {sub['step']}/{steps}") and "ETA –" not in text
    assert progress(Store(), result["run_id"])["sub"] is None       # finished: the phase is no longer shown


def test_a_deepinversion_run_shows_its_synthesis_progress_and_eta(monkeypatch):
    _, seen = run_and_look(short("deepinversion", n_images=40, iterations=4), monkeypatch)
    total = 1 * 4                              # one batch of max(20, 64) images, 4 iterations
    assert [p["sub"]["step"] for p in seen] == [1, 2, 3]
    sub = seen[-1]["sub"]
    assert sub["what"] == "images synthesised from the teacher" and sub["steps"] == total and sub["epochs"] is None
    assert sub["fraction"] == pytest.approx(0.75) and sub["eta_s"] is not None
    assert progress_text(sub).startswith("iteration 3/4 · 75 %")
    assert seen[-1]["message"].startswith("synthesising its training images from the teacher first")


def test_the_train_page_card_shows_the_phase(monkeypatch):
    """Crafted records, as a TAKD run in its assistant's third step of 12 leaves them, seen by a fresh session."""
    store = Store()
    cfg = resolve(dict(dataset="digits", student="cnn_tiny", teacher="cnn_large", scheme="takd", epochs=4,
                       n_train=100, batch_size=20, name="takd with its assistant",
                       scheme_params={"assistant": "cnn_small", "assistant_epochs": 2}))
    rid = store.create_run(cfg.to_dict(), status="queued")
    store.update_run(rid, device="cpu", queued_at=time.time())
    store.set_status(rid, "running", **owners.fields())
    for done in (0, 3):
        store.log_metrics(rid, "phase", 0, done, {"assistant cnn_small/done": done, "assistant cnn_small/total": 10,
                                                  "assistant cnn_small/epochs": 2, "assistant cnn_small/loss": 1.5})
        time.sleep(0.05)
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    bar = at.get("progress")[0].proto.text
    assert bar.startswith("its assistant cnn_small: epoch 0/2 · step 3/10 · 30 %") and "ETA –" not in bar
    captions = " ".join(c.value for c in at.caption)
    assert "distilling its assistant cnn_small from the teacher first" in captions
