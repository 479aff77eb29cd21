"""The Attention and Feature similarity pages on finished transformer runs (tiny, on `shapes`, whose object masks
give the inside-object fraction): ViT -> ViT, a CNN teacher -> DeiT student, ViT -> CNN. Every transformer view
renders with no exception: rollout beside rollout (or beside a CNN's attention and Grad-CAM), the block x head
class-token grid, the rollout's mask fraction, and the block x stage CKA matrix labelled "block i"."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.analysis import list_probes, load_probe
from explorer.app import mask_fractions as MF
from explorer.app.analysis import block_labels, is_transformer, stage_label, subset
from explorer.engine import run
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dataset="shapes", n_train=48, epochs=1, batch_size=16, probe_size=4, probe_epochs=[0, 1],
            teacher_epochs=1)
RUNS = {"vit": dict(TINY, teacher="vit_tiny_p4", student="vit_tiny_p4", methods=[{"key": "kd"}], name="vit"),
        "deit": dict(TINY, teacher="cnn_tiny", student="deit_tiny_p4", scheme="deit", methods=[], name="deit"),
        "vit2cnn": dict(TINY, teacher="vit_tiny_p4", student="cnn_tiny", methods=[{"key": "kd"}], name="vit2cnn")}


def _figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _titles(figs) -> list[str]:
    return [(f["layout"].get("title") or {}).get("text") or "" for f in figs]


def _panel_titles(fig) -> list[str]:
    return [a.get("text", "") for a in fig["layout"].get("annotations", [])]


def test_block_labels_and_subset_keep_the_transformer_keys():
    assert stage_label("blocks.0") == "block 1" and stage_label("encoder.blocks.3") == "block 4"
    assert stage_label("layer2") == "layer2"
    import pandas as pd
    df = block_labels(pd.DataFrame([[1.0]], index=["blocks.1"], columns=["layer3"]))
    assert list(df.index) == ["block 2"] and list(df.columns) == ["layer3"]
    side = {"logits": torch.zeros(3, 2), "stages": [torch.zeros(3, 4, 2, 2)], "stage_names": ["blocks.0"],
            "embedding": torch.zeros(3, 4), "cls_attention": torch.arange(3.0)[:, None, None, None, None]
            .expand(3, 1, 2, 2, 2), "rollout": torch.arange(3.0)[:, None, None].expand(3, 2, 2)}
    probe = {"epoch": 0, "x": torch.zeros(3, 1, 4, 4), "y": torch.zeros(3), "index": torch.arange(3),
             "student": side, "teacher": {k: side[k] for k in ("logits", "stages", "stage_names", "embedding")}}
    sub = subset(probe, [2, 0])
    assert is_transformer(sub["student"]) and not is_transformer(sub["teacher"])
    assert sub["student"]["rollout"][:, 0, 0].tolist() == [2.0, 0.0]
    assert sub["student"]["cls_attention"].shape == (2, 1, 2, 2, 2)


@pytest.fixture
def transformer_runs(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = Store()
    return store, {k: store.get_run(run(cfg, store)["run_id"]) for k, cfg in RUNS.items()}


def test_attention_and_similarity_pages_show_every_transformer_view(transformer_runs):
    store, runs = transformer_runs
    for key, r in runs.items():
        probe = load_probe(list_probes(r["run_dir"])[-1][1])
        vit = {side: is_transformer(probe[side]) for side in ("teacher", "student")}
        assert vit == {"vit": dict(teacher=True, student=True), "deit": dict(teacher=False, student=True),
                       "vit2cnn": dict(teacher=True, student=False)}[key]
        df = MF.run_fractions(r, None, [str(i) for i in range(10)], load_probe)
        roll = df[df["map"] == "rollout"]
        assert set(roll["model"]) == {m for side, m in (("teacher", "teacher"), ("student", "distilled student"))
                                      if vit[side]}
        assert roll["fraction"].between(0, 1).all()

        at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=300)
        at.session_state["analysis_run"] = r["id"]
        at.run()
        at.switch_page("pages/3_Attention_maps.py").run()
        assert not at.exception, (key, [e.value for e in at.exception])
        assert not at.error, (key, [e.value for e in at.error])
        assert any(h.value == "Transformer attention" for h in at.subheader), key
        figs = _figures(at)
        rows = [f for f in figs if "rollout, epoch" in (f["layout"].get("title") or {}).get("text", "")]
        assert len(rows) == 2, key                       # the two picked samples
        panels = _panel_titles(rows[0])
        ref = "teacher"
        want = [f"{ref}: rollout" if vit["teacher"] else f"{ref}: attention", "student: rollout"
                if vit["student"] else "student: attention"]
        labels = [p.split("<br>")[0] for p in panels[1:]]   # teacher's panels first, then the student's
        assert labels[0] == want[0] and want[1] in labels[1:], (key, panels)
        if not all(vit.values()):                        # the CNN's Grad-CAM beside the ViT's rollout
            assert any(p.startswith(("teacher: Grad-CAM", "student: Grad-CAM")) for p in panels), panels
        assert all("inside object" in p for p in panels[1:]), panels        # shapes: each panel's mask fraction
        grids = [f for f in figs if "class-token attention" in _titles([f])[0]]
        assert len(grids) == sum(vit.values()), key
        heads = [t.get("name") for t in grids[0]["data"] if t.get("type") == "heatmap"]
        assert "block 4 · head 1" in heads and "block 1 · head 2" in heads
        assert any("(rollout)" in (t.get("name") or "") for f in figs for t in f["data"]), key   # mask bars

        at.radio(key="att.kind").set_value("gradcam").run()   # Grad-CAM of a ViT's final model: the tap-based one
        assert not at.exception, (key, [e.value for e in at.exception])
        assert any("gradcam" in json.dumps(f["layout"]) for f in _figures(at)), key   # the rows' label
        at.radio(key="att.kind").set_value("attention")

        at.switch_page("pages/4_Feature_similarity.py").run()
        assert not at.exception, (key, [e.value for e in at.exception])
        assert not at.error, (key, [e.value for e in at.error])
        cka = next(f for f in _figures(at) if f["data"][0].get("type") == "heatmap")
        z = np.asarray(cka["data"][0]["text"], dtype=float)   # each cell's value as annotated (z is binary-packed)
        assert np.isfinite(z).all() and z.shape[0] >= 2 and z.shape[1] >= 2 and ((z >= 0) & (z <= 1)).all()
        ys, xs = cka["data"][0]["y"], cka["data"][0]["x"]
        assert (ys[0] == "block 1") == vit["teacher"] and (xs[0] == "block 1") == vit["student"], (key, ys, xs)
        assert cka["layout"]["yaxis"]["title"]["text"] == ("teacher block" if vit["teacher"] else "teacher stage")


def test_the_train_form_takes_a_timm_model_by_name_and_checks_it_live():
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page("pages/1_Train.py").run()
    at.text_input(key="train.student.other").set_value("timm:no_such_model_xyz").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="train.student").value == "timm:no_such_model_xyz"   # the picker shows the name
    errors = " ".join(e.value for e in at.error)
    assert "student" in errors and "timm" in errors, errors     # no timm here, or no such model: named beside it
    at.text_input(key="train.student.other").set_value("").run()
    at.selectbox(key="train.student").set_value("vit_tiny_p2").run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_rollout_is_scored_inside_the_mask_like_stage_attention():
    from explorer.analysis.mask_fraction import mask_area, rollout_mask_fraction
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True                               # the top-left quarter
    roll = torch.ones(2, 4, 4)                            # on a 4 x 4 patch grid, upsampled to the mask's 8 x 8
    roll[1] = 0
    roll[1, :2, :2] = 1.0                                 # all its mass on the object's patches
    f = rollout_mask_fraction({"rollout": roll}, masks)
    assert f[0] == pytest.approx(mask_area(masks)[0]) and f[1] > 0.8   # bilinear upsampling blurs the edge
    assert rollout_mask_fraction({"stages": []}, masks) is None
