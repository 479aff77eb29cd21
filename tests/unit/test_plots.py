"""Every figure builder in explorer.plots: the figure carries the data it was given."""
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from explorer import analysis as an
from explorer import plots as pl
from explorer.plots._style import symmetric_limit, to_display_image


def _types(fig):
    """Trace types, after checking the figure serialises the way Streamlit sends it (NaN -> null)."""
    assert isinstance(fig, go.Figure)
    assert len(json.loads(fig.to_json())["data"]) == len(fig.data)
    return [t.type for t in fig.data]


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture
def image():
    return _rng().random((3, 12, 12)).astype(np.float32)


def _maps(seed, n=3, hw=12):
    g = _rng(seed)
    return {f"layer{i + 1}": g.random((hw, hw)) for i in range(n)}


# ----------------------------------------------------------------------------------- style
def test_to_display_image_layouts():
    chw = np.zeros((3, 5, 7), dtype=np.float32)
    chw[0] = 1.0
    out = to_display_image(chw)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out[0, 0, 0] == 255 and out[0, 0, 1] == 0
    assert to_display_image(np.zeros((5, 7))).shape == (5, 7, 3)
    assert to_display_image(torch.zeros(1, 4, 4)).shape == (4, 4, 3)
    assert to_display_image(np.full((4, 4, 3), 200, dtype=np.uint8))[0, 0, 0] == 200
    norm = (np.full((3, 2, 2), 0.5) - 0.5) / 0.25                      # mean grey, normalised
    assert to_display_image(norm, mean=(0.5,) * 3, std=(0.25,) * 3)[0, 0, 0] == 128
    assert symmetric_limit(np.array([-3.0, 1.0]), np.array([np.nan, 2.0])) == 3.0


# ----------------------------------------------------------------------------------- attention
def test_attention_grid(image):
    t, s = _maps(1), _maps(2)
    fig = pl.attention_grid(image, t, s, opacity=0.4, gaps=[0.1, 0.2, 0.3])
    assert isinstance(fig, go.Figure)
    assert _types(fig) == ["image", "heatmap", "contour", "heatmap", "contour", "heatmap"] * 3
    heat = [tr for tr in fig.data if tr.type == "heatmap"]
    assert np.allclose(heat[0].z, t["layer1"]) and np.allclose(heat[1].z, s["layer1"])
    assert np.allclose(heat[2].z, s["layer1"] - t["layer1"])
    # the maps are opaque: every colour shown is on the colour bar (no blend with the grey input); the
    # input is an outline of white lines on top
    assert heat[0].opacity == 1.0 and heat[0].coloraxis == "coloraxis" and heat[2].coloraxis == "coloraxis2"
    outline = [tr for tr in fig.data if tr.type == "contour"]
    assert outline[0].opacity == 0.4 and outline[0].contours.coloring == "lines" and outline[0].showscale is False
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    lim = max(np.abs(s[k] - t[k]).max() for k in t)
    assert fig.layout.coloraxis2.cmin == pytest.approx(-lim) and fig.layout.coloraxis2.cmax == pytest.approx(lim)
    titles = [a.text for a in fig.layout.annotations]
    assert titles.count("student − teacher") == 3 and titles.count("input") == 3   # the stage: each row's y title
    assert fig.layout.yaxis5.title.text == "layer2<br>gap 0.20"
    assert fig.layout.yaxis.autorange == "reversed"


def test_attention_grid_resizes_coarse_maps_and_checks_counts(image):
    fig = pl.attention_grid(image, [np.ones((3, 3))], [np.zeros((6, 6))], stage_labels=["deep"])
    assert np.asarray(fig.data[2].z).shape == (12, 12)
    with pytest.raises(ValueError, match="2 teacher maps but 1"):
        pl.attention_grid(image, [np.ones((3, 3))] * 2, [np.ones((3, 3))])


def test_class_mean_maps_figure():
    t = _rng(1).random((4, 6, 6))
    s = _rng(2).random((4, 6, 6))
    s[3] = np.nan                                     # absent class
    fig = pl.class_mean_maps_figure(t, s, classes=list("abcd"), max_classes=3)
    assert _types(fig) == ["heatmap"] * 9
    assert np.allclose(fig.data[0].z, t[0]) and np.allclose(fig.data[1].z, s[0])
    assert np.allclose(fig.data[2].z, s[0] - t[0])
    texts = [a.text for a in fig.layout.annotations]
    assert {"a", "b", "c", "teacher", "student", "student − teacher"} <= set(texts) and "d" not in texts


def test_distillation_comparison(image):
    t, a, d = (_rng(i).random((12, 12)) for i in range(3))
    fig = pl.distillation_comparison(image, t, a, d, gaps=(0.4, 0.1))
    assert _types(fig) == ["heatmap", "contour"] * 3 + ["image", "heatmap", "heatmap"]
    assert np.allclose(fig.data[2].z, a) and np.allclose(fig.data[7].z, a - t) and np.allclose(fig.data[8].z, d - t)
    titles = [x.text for x in fig.layout.annotations]
    assert "student alone<br>− teacher<br>gap 0.40" in titles and "distilled student" in titles


def test_attention_figures_from_analysis_outputs(image):
    """End to end with real analysis outputs: maps for a batch, pick sample 0."""
    feats_t = torch.randn(2, 4, 6, 6)
    feats_s = torch.randn(2, 3, 6, 6)
    mt = an.stage_attention({"l1": feats_t}, size=12)
    ms = an.stage_attention({"l1": feats_s}, size=12)
    fig = pl.attention_grid(torch.as_tensor(image), {"l1": mt["l1"][0]}, {"l1": ms["l1"][0]})
    assert np.allclose(fig.data[1].z, mt["l1"][0])


# ----------------------------------------------------------------------------------- similarity
def test_cka_heatmap():
    df = pd.DataFrame([[0.9, 0.2, 0.1], [0.3, 0.8, np.nan]], index=["t1", "t2"], columns=["s1", "s2", "s3"])
    fig = pl.cka_heatmap(df)
    assert _types(fig) == ["heatmap"]
    h = fig.data[0]
    assert np.allclose(np.asarray(h.z, dtype=float), df.values, equal_nan=True)
    assert list(h.x) == ["s1", "s2", "s3"] and list(h.y) == ["t1", "t2"]
    assert (h.zmin, h.zmax) == (0.0, 1.0) and h.texttemplate == "%{text}"
    assert h.text[0][0] == "0.90" and h.text[1][2] == ""
    assert fig.layout.xaxis.title.text == "student stage" and fig.layout.yaxis.title.text == "teacher stage"
    assert fig.layout.title.text == "Linear CKA"


def test_cka_heatmap_from_cka_matrix():
    x = torch.randn(40, 8)
    m = an.cka_matrix({"a": x, "b": x ** 2}, {"c": x.relu()})
    fig = pl.cka_heatmap(m, title="t vs s")
    assert np.allclose(fig.data[0].z, m.values)


def test_cka_over_epochs_figure():
    df = pd.DataFrame({"epoch": [0, 5, 0, 5], "pair": ["a ↔ A", "a ↔ A", "b ↔ B", "b ↔ B"],
                       "cka": [0.2, 0.6, 0.1, 0.5]})
    fig = pl.cka_over_epochs_figure(df)
    assert _types(fig) == ["scatter", "scatter"]
    assert [t.name for t in fig.data] == ["a ↔ A", "b ↔ B"]
    assert list(fig.data[0].x) == [0, 5] and list(fig.data[1].y) == [0.1, 0.5]
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text == "CKA"
    runs = pl.cka_over_epochs_figure(pd.concat([df.assign(run="r1"), df.assign(run="r2")]))
    assert len(runs.data) == 4 and runs.data[0].name == "r1 · a ↔ A"


# ----------------------------------------------------------------------------------- relations
def test_relation_matrices_sorted_with_boundaries():
    e_t, e_s = torch.randn(9, 5), torch.randn(9, 4)
    y = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2])
    gt, gs = an.cosine_gram(e_t), an.cosine_gram(e_s)
    fig = pl.relation_matrices(gt, gs, y=y, classes=["cat", "dog", "emu"], gap=an.relation_gap(gt, gs))
    assert _types(fig) == ["heatmap"] * 3
    order = np.argsort(y, kind="stable")
    assert np.allclose(fig.data[0].z, gt[np.ix_(order, order)])
    assert np.allclose(fig.data[1].z, gs[np.ix_(order, order)])
    assert np.allclose(fig.data[2].z, (gs - gt)[np.ix_(order, order)])
    assert fig.data[2].coloraxis == "coloraxis2" and fig.layout.coloraxis2.cmid == 0
    assert fig.layout.coloraxis2.cmin == -fig.layout.coloraxis2.cmax
    assert len(fig.layout.shapes) == 2 * 2 * 3                       # 2 boundaries x (h + v) x 3 panels
    assert list(fig.layout.xaxis.ticktext) == ["cat", "dog", "emu"]
    assert "Pearson r" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations] == ["teacher", "student", "student − teacher"]


def test_relation_matrices_unsorted():
    d = an.rkd_distance_matrix(torch.randn(6, 3))
    fig = pl.relation_matrices(d, d, kind="distance")
    assert np.allclose(fig.data[0].z, d) and not fig.layout.shapes
    assert fig.layout.coloraxis.colorbar.title.text == "normalised distance"
    with pytest.raises(ValueError):
        pl.relation_matrices(d, d[:3, :3])


def test_rkd_angle_histogram():
    st_t = an.rkd_angle_stats(torch.randn(12, 4), bins=20)
    st_s = an.rkd_angle_stats(torch.randn(12, 4), bins=20)
    fig = pl.rkd_angle_histogram(st_t, st_s)
    assert _types(fig) == ["bar", "bar"]
    assert np.allclose(fig.data[0].y, st_t["density"]) and np.allclose(fig.data[1].y, st_s["density"])
    assert np.allclose(fig.data[0].x, (st_t["edges"][:-1] + st_t["edges"][1:]) / 2)
    assert fig.data[0].name.startswith("teacher (mean") and fig.layout.barmode == "overlay"
    assert fig.layout.xaxis.title.text.startswith("cos") and fig.layout.yaxis.title.text == "density"


def test_dark_knowledge_heatmap():
    dk = an.dark_knowledge(torch.randn(60, 3) * 2, np.arange(60) % 3, temperature=4)
    fig = pl.dark_knowledge_heatmap(dk, classes=["a", "b", "c"], temperature=4)
    assert _types(fig) == ["heatmap"] and np.allclose(fig.data[0].z, dk)
    assert list(fig.data[0].x) == ["a", "b", "c"] and "T = 4" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "true class"
    hidden = pl.dark_knowledge_heatmap(dk, hide_diagonal=True)
    z = np.asarray(hidden.data[0].z, dtype=float)
    assert np.isnan(np.diag(z)).all() and np.allclose(z[0, 1:], dk[0, 1:])


# ----------------------------------------------------------------------------------- logits
def test_softened_bars():
    zt, zs = np.array([3.0, 1.0, 0.0]), np.array([1.0, 2.0, 0.0])
    fig = pl.softened_bars(zt, zs, temperatures=(1, 4), classes=["a", "b", "c"], label=0)
    assert _types(fig) == ["bar"] * 4
    assert np.allclose(fig.data[0].y, an.soften(zt, 1)) and np.allclose(fig.data[3].y, an.soften(zs, 4))
    assert [t.name for t in fig.data] == ["teacher", "student"] * 2
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    assert fig.data[0].x[0] == "<b>a ✓</b>"
    assert [a.text for a in fig.layout.annotations] == ["T = 1", "T = 4"]
    assert fig.layout.yaxis.title.text == "probability" and fig.layout.xaxis2.title.text == "class"


def test_confusion_heatmaps():
    z = torch.randn(50, 3)
    y = np.arange(50) % 3
    ct, cs = an.confusion(z, y), an.confusion(z.flip(1), y)
    fig = pl.confusion_heatmaps({"teacher": ct, "student": cs}, classes=["a", "b", "c"], show_difference=True)
    assert _types(fig) == ["heatmap"] * 3
    assert np.allclose(fig.data[0].z, ct) and np.allclose(fig.data[1].z, cs) and np.allclose(fig.data[2].z, cs - ct)
    assert fig.data[0].texttemplate == "%{z:.0f}"
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "true"
    assert [a.text for a in fig.layout.annotations] == ["teacher", "student", "student − teacher"]
    norm = pl.confusion_heatmaps({"t": an.confusion(z, y, normalize="true")})
    assert len(norm.data) == 1 and norm.data[0].texttemplate == "%{z:.2f}"


def test_reliability_diagram():
    g = _rng()
    z = g.normal(size=(500, 4)) * 3
    y = g.integers(0, 4, 500)
    cal_t, cal_s = an.calibration(z, y, n_bins=10), an.calibration(z / 3, y, n_bins=10)
    fig = pl.reliability_diagram({"teacher": cal_t, "student": cal_s})
    assert _types(fig) == ["scatter", "bar", "bar", "bar", "bar"]
    assert np.allclose(fig.data[1].y, cal_t[1]["accuracy"], equal_nan=True)
    assert np.allclose(fig.data[2].y, cal_t[1]["count"])
    assert f"teacher ECE {cal_t[0]:.3f}" in fig.layout.title.text and f"student ECE {cal_s[0]:.3f}" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "accuracy" and fig.layout.xaxis2.title.text.startswith("confidence")
    single = pl.reliability_diagram(cal_t, name="teacher")
    assert len(single.data) == 3 and "ECE" in single.layout.title.text


def test_per_class_accuracy_bars():
    z = torch.randn(40, 3)
    y = np.arange(40) % 3
    dt = an.per_class_accuracy(z, y, ["a", "b", "c"])
    ds = an.per_class_accuracy(-z, y, ["a", "b", "c"])
    fig = pl.per_class_accuracy_bars({"teacher": dt, "student": ds})
    assert _types(fig) == ["bar", "bar"] and fig.layout.barmode == "group"
    assert np.allclose(fig.data[0].y, dt["accuracy"]) and list(fig.data[1].x) == ["a", "b", "c"]
    assert fig.layout.yaxis.title.text == "accuracy" and fig.layout.xaxis.title.text == "class"


def test_disagreement_gallery():
    imgs = torch.rand(8, 3, 10, 10)
    t = torch.randn(8, 3)
    df = an.disagreements(t, -t, np.arange(8) % 3, k=5, index=np.arange(100, 108))
    fig = pl.disagreement_gallery(imgs, df, classes=["a", "b", "c"], cols=3)
    assert _types(fig) == ["image"] * 5
    first = int(df["position"].iloc[0])
    assert np.array_equal(np.asarray(fig.data[0].z), to_display_image(imgs[first]))
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == 5 and titles[0].startswith(f"#{df['index'].iloc[0]} ")
    assert "T: " in titles[0] and "KL" in titles[0]
    empty = pl.disagreement_gallery(imgs, df.iloc[:0])
    assert len(empty.data) == 0 and "agree" in empty.layout.annotations[0].text


# ----------------------------------------------------------------------------------- embeddings
def test_embedding_scatter():
    y = np.arange(30) % 3
    df = an.project(torch.randn(30, 8), torch.randn(30, 5), y, index=np.arange(30) + 50)
    fig = pl.embedding_scatter(df, classes=["a", "b", "c"])
    assert _types(fig) == ["scatter"] * 6
    assert [t.name for t in fig.data] == ["a", "b", "c"] * 2
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3
    assert fig.data[0].marker.color == fig.data[3].marker.color != fig.data[1].marker.color
    sub = df[(df.model == "student") & (df.label == 1)]
    assert np.allclose(fig.data[4].x, sub.x) and np.array_equal(fig.data[4].customdata, sub["index"])
    assert [a.text for a in fig.layout.annotations] == ["teacher", "student"]
    assert fig.layout.xaxis.title.text == "PCA 1" and fig.layout.yaxis.title.text == "PCA 2"


# ----------------------------------------------------------------------------------- training
def test_training_curves_several_runs():
    rows = [{"epoch": e, "name": n, "value": v * (e + 1), "run": r}
            for r, v in (("kd", 1.0), ("alone", 2.0)) for n in ("loss", "val_acc", "lr") for e in range(3)]
    df = pd.DataFrame(rows)
    fig = pl.training_curves(df, cols=2, log_y=["lr"])
    assert _types(fig) == ["scatter"] * 6
    assert [a.text for a in fig.layout.annotations] == ["loss", "val_acc", "lr"]
    assert [t.name for t in fig.data] == ["kd", "alone"] * 3
    assert sum(bool(t.showlegend) for t in fig.data) == 2
    assert fig.data[0].line.color == fig.data[2].line.color != fig.data[1].line.color
    assert list(fig.data[1].y) == [2.0, 4.0, 6.0]
    assert fig.layout.yaxis3.type == "log" and fig.layout.xaxis.title.text == "epoch"
    assert fig.layout.yaxis.title.text == "loss"
    one = pl.training_curves(df[df.run == "kd"].drop(columns="run"), names=["val_acc"])
    assert len(one.data) == 1 and one.data[0].name == "run"
    with pytest.raises(ValueError, match="need columns"):
        pl.training_curves(pd.DataFrame({"epoch": [1]}))
