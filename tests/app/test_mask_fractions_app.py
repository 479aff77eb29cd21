"""The attention-inside-the-mask measure on a real (tiny) shapes run: the logic, and the Attention page."""
import json
from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from explorer.analysis import list_probes, load_probe
from explorer.app import mask_fractions as MF
from explorer.engine import run
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
# A tiny budget: a 1-epoch cnn_tiny teacher (its own recipe, so it is trained here, in seconds), 1-epoch students.
TINY = dict(dataset="shapes", teacher="cnn_tiny", teacher_epochs=1, student="cnn_tiny", n_train=100, epochs=1,
            probe_size=16, probe_epochs=[0, 1])


def test_a_shapes_run_scores_every_model_and_stage_and_the_page_shows_it(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = Store()
    alone = run(dict(TINY, methods=[], name="alone"), store)
    kd = run(dict(TINY, methods=[{"key": "kd"}, {"key": "at", "weight": 100.0}], name="at"), store)
    r, a = store.get_run(kd["run_id"]), store.get_run(alone["run_id"])
    probe = load_probe(list_probes(r["run_dir"])[-1][1])
    masks = MF.probe_masks(r["config"], probe)
    assert masks is not None and masks.shape == (16, 32, 32) and masks.dtype == torch.bool
    classes = [str(i) for i in range(10)]
    df = MF.run_fractions(r, a, classes, load_probe)
    assert set(df["model"]) == set(MF.MODELS) and set(df["epoch"]) == {0, 1}
    assert df["fraction"].between(0, 1).all()
    table = MF.last_epoch_table(df)
    assert list(table.columns) == list(MF.MODELS) and len(table) >= 2   # one row per stage

    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=300).run()
    at.switch_page("pages/3_Attention_maps.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any(h.value == "Attention inside the object" for h in at.subheader)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {t.get("name") for f in figs for t in f["data"]
             if "inside" in (t.get("hovertemplate") or "")}
    assert set(MF.MODELS) <= names
    assert any("Grad-CAM" in (n or "") for n in names)
    shown = [d.value for d in at.dataframe]
    assert any(list(v.columns) == list(MF.MODELS) and np.isfinite(v.to_numpy()).all() for v in shown)


def test_a_dataset_without_masks_shows_no_mask_measure(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run(dict(dataset="digits", n_train=100, epochs=1, probe_size=8, methods=[{"key": "kd"}]), Store())
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=300).run()
    at.switch_page("pages/3_Attention_maps.py").run()
    assert not at.exception and not at.error
    assert not any(h.value == "Attention inside the object" for h in at.subheader)
    assert MF.test_masks({"dataset": "digits"}) is None
