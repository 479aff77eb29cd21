"""timm models in real runs (issue 18 §1): a timm CNN and a timm ViT, random init, each complete a run as the
student of the bundled digits teacher with kd+at, the stored model rebuilds from its name, and their stage names
are the student axis of the Feature similarity (CKA) page; a timm teacher is trained and distilled from.
Skipped where timm cannot be imported; scripts/test.sh runs them in .venv-timm."""
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.app.analysis import stage_label

from explorer.config import RunConfig
from explorer.engine import run
from explorer.models import create_model
from explorer.store import Store
from support.runs import stored_student_test_acc

try:
    import timm  # noqa: F401
    WHY = ""
except Exception as e:   # not installed, or a torchvision built for another torch
    WHY = f"timm cannot be imported here ({type(e).__name__}: {e}); scripts/setup.sh --timm makes .venv-timm"

pytestmark = [pytest.mark.timm, pytest.mark.skipif(bool(WHY), reason=WHY)]
REPO = Path(__file__).resolve().parents[2]
TINY = dict(dataset="digits", n_train=100, epochs=1, probe_size=16, batch_size=32)


@pytest.mark.parametrize("student", ["timm:resnet10t", "timm:vit_tiny_patch16_224?patch_size=4"])
def test_a_timm_student_completes_a_kd_at_run_and_its_stages_reach_the_cka_page(student):
    store = Store()
    out = run(RunConfig(student=student, methods="kd+at", **TINY), store=store)
    r = store.get_run(out["run_id"])
    assert r["status"] == "completed", r.get("message")
    assert r["teacher_ref"] and json.loads(r["teacher_ref"])["source"] == "bundled"   # the bundled digits teacher
    acc = r["summary"]["test_acc"]
    assert 0.0 <= acc <= 1.0 and stored_student_test_acc(store, r["id"]) == pytest.approx(acc, abs=1e-6)
    stages = create_model(student, num_classes=10, in_channels=1, image_size=8).kd_stages

    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page("pages/4_Feature_similarity.py").run()
    assert not at.exception
    maps = [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "heatmap"]
    # the student's timm stage names, as the page labels them (a ViT's `blocks.i` reads "block i+1")
    assert maps and maps[0]["x"] == [stage_label(s) for s in stages]


def test_a_timm_teacher_is_trained_and_distilled_from():
    store = Store()
    out = run(RunConfig(teacher="timm:resnet10t", student="cnn_tiny", methods="kd", teacher_epochs=1, **TINY),
              store=store)
    r = store.get_run(out["run_id"])
    assert r["status"] == "completed", r.get("message")
    teacher = [t for t in store.list_runs() if t["config"]["role"] == "teacher"]
    assert len(teacher) == 1 and teacher[0]["config"]["student"] == "timm:resnet10t"
    assert teacher[0]["status"] == "completed" and r["summary"]["teacher_acc"] is not None


def test_minilm_distils_one_timm_vit_into_another_through_its_attention_and_value_taps():
    vit = "timm:vit_tiny_patch16_224?patch_size=4&depth=2"
    store = Store()
    out = run(RunConfig(teacher=vit, student=vit, methods="minilm", teacher_epochs=1, optimizer="adamw", lr=1e-3,
                        **TINY), store=store)
    r = store.get_run(out["run_id"])
    assert r["status"] == "completed", r.get("message")
    df = store.metrics_df(r["id"])
    terms = df[df["name"].str.startswith("train/minilm")]
    # both terms, computed from both models' attention and value taps
    assert set(terms["name"]) == {"train/minilm_at", "train/minilm_vr"} and (terms["value"] > 0).all()
