"""The maths of explorer.analysis, on small synthetic data and tiny models (CPU, seconds)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from explorer.analysis import attention as A
from explorer.analysis import cka as C
from explorer.analysis import cka_epochs as CE
from explorer.analysis import cka_stages as CS
from explorer.analysis import embeddings as E
from explorer.analysis import logits as L
from explorer.analysis import probes as P
from explorer.analysis import relations as R
from explorer.models.taps import TapError


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_rng(seed), dtype=torch.float64))
    return q


class TinyCNN(nn.Module):
    """Two conv stages, an embedding, a linear head; in-place ReLUs like real zoo models."""
    kd_stages = ["stage1", "stage2"]
    kd_embedding = "pool"

    def __init__(self, c=3, k=4, w=8):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w),
                                    nn.ReLU(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * w, k)
        self.unused = nn.Conv2d(w, w, 1)        # never called in forward

    def forward(self, x):
        return self.fc(self.pool(self.stage2(self.stage1(x))))


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return TinyCNN()


@pytest.fixture
def images():
    return torch.randn(6, 3, 16, 16, generator=_rng(1))


# ----------------------------------------------------------------------------------- CKA
def test_cka_of_representation_with_itself_is_one():
    x = torch.randn(64, 8, 4, 4, generator=_rng())
    assert C.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert C.rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert C.minibatch_cka(x, x, batch_size=16) == pytest.approx(1.0, abs=1e-12)
    m = CS.cka_matrix({"a": x, "b": x.relu()}, kind="linear")
    assert np.allclose(np.diag(m.values), 1.0, atol=1e-6)
    assert np.allclose(m.values, m.values.T, atol=1e-6)


def test_linear_cka_invariant_to_orthogonal_and_isotropic_scaling_not_to_invertible_maps():
    x = torch.randn(200, 10, generator=_rng(), dtype=torch.float64)
    q = _orthogonal(10, seed=3)
    assert C.linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert C.linear_cka(x, 7.5 * x) == pytest.approx(1.0, abs=1e-10)
    y = torch.tanh(x @ torch.randn(10, 6, generator=_rng(4), dtype=torch.float64))
    base = C.linear_cka(x, y)
    assert C.linear_cka(x @ q * 3.0, y) == pytest.approx(base, abs=1e-10)
    # an invertible but strongly anisotropic map: one direction stretched 100x. For isotropic x,
    # CKA(x, xA) = ||A||_F^2 / (sqrt(d) ||A^T A||_F) ~ 10009 / (3.16 * 1e4) ~ 0.32.
    a = torch.eye(10, dtype=torch.float64)
    a[0, 0] = 100.0
    assert torch.linalg.matrix_rank(a) == 10
    assert C.linear_cka(x, x @ a) < 0.5


def test_both_linear_cka_forms_agree():
    x = torch.randn(30, 5, generator=_rng())        # d < n: feature-space form
    y = torch.randn(30, 4, generator=_rng(1)) + x[:, :4]
    xw, yw = x.repeat(1, 20), y.repeat(1, 20)      # d > n: Gram form; duplicating columns is isotropic
    assert C.linear_cka(x, y) == pytest.approx(C.linear_cka(xw, yw), abs=1e-10)


def test_minibatch_cka_approaches_full_cka():
    x = torch.randn(4000, 20, generator=_rng())
    y = torch.tanh(x @ torch.randn(20, 30, generator=_rng(1))) + 0.5 * torch.randn(4000, 30, generator=_rng(2))
    full = C.linear_cka(x, y)
    mb = C.minibatch_cka(x, y, batch_size=100)
    assert abs(full - mb) < 0.05
    m = CS.cka_matrix({"x": x}, {"y": y}, kind="minibatch", batch_size=100)
    assert m.iloc[0, 0] == pytest.approx(mb, abs=1e-9)


def test_hsic_unbiased_matches_definition():
    n = 9
    k = torch.randn(n, n, generator=_rng(), dtype=torch.float64)
    k = k @ k.T
    l = torch.randn(n, n, generator=_rng(1), dtype=torch.float64)
    l = l @ l.T
    kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=torch.float64)
    ref = (torch.trace(kt @ lt) + (one.T @ kt @ one) * (one.T @ lt @ one) / ((n - 1) * (n - 2))
           - 2.0 / (n - 2) * (one.T @ kt @ lt @ one)) / (n * (n - 3))
    assert C.hsic_unbiased(k, l) == pytest.approx(float(ref), rel=1e-10)


def test_cka_float64_robust_to_extreme_scales():
    x = torch.randn(100, 32, generator=_rng(), dtype=torch.float64)
    y = torch.relu(x @ torch.randn(32, 16, generator=_rng(1), dtype=torch.float64))
    ref = C.linear_cka(x, y)
    small, big = (x * 1e-6).float(), (y * 1e6).float()
    v = C.linear_cka(small, big)
    assert math.isfinite(v) and v == pytest.approx(ref, abs=1e-6)
    assert C.rbf_cka(small, big) == pytest.approx(C.rbf_cka(x, y), abs=1e-6)
    assert C.minibatch_cka(small, big, 25) == pytest.approx(C.minibatch_cka(x, y, 25), abs=1e-6)
    m = CS.cka_matrix({"s": small}, {"b": big})                    # float32 Gram products
    assert m.iloc[0, 0] == pytest.approx(ref, abs=1e-5)
    m64 = CS.cka_matrix({"s": small}, {"b": big}, gram_dtype=torch.float64)
    assert m64.iloc[0, 0] == pytest.approx(ref, abs=1e-6)


def test_cka_matrix_matches_pairwise_and_shapes():
    feats_a = {"l1": torch.randn(50, 4, 6, 6, generator=_rng()), "l2": torch.randn(50, 12, generator=_rng(1))}
    feats_b = {"m1": feats_a["l1"].relu() + 0.1 * torch.randn(50, 4, 6, 6, generator=_rng(2)),
               "m2": torch.randn(50, 3, 2, 2, generator=_rng(3)), "m3": feats_a["l2"] ** 2}
    for kind, fn in (("linear", C.linear_cka), ("rbf", C.rbf_cka)):
        m = CS.cka_matrix(feats_a, feats_b, kind=kind)
        assert list(m.index) == ["l1", "l2"] and list(m.columns) == ["m1", "m2", "m3"]
        for a in feats_a:
            for b in feats_b:
                assert m.loc[a, b] == pytest.approx(fn(feats_a[a], feats_b[b]), abs=1e-5)
        assert ((m.values >= 0) & (m.values <= 1)).all()


def test_minibatch_needs_four_samples_per_batch():
    x = torch.randn(3, 5, generator=_rng())
    with pytest.raises(ValueError, match=r"the unbiased HSIC needs at least 4 samples per batch; got n=3"):
        C.minibatch_cka(x, x)
    with pytest.raises(ValueError, match="got n=3"):
        C.CKAAccumulator().update({"a": x}, {"b": x})
    # a short tail is merged, never a batch of < 4: 10 samples in batches of 8 -> 5 + 5
    y = torch.randn(10, 5, generator=_rng(1))
    assert math.isfinite(C.minibatch_cka(y, y + 0.1 * torch.randn(10, 5, generator=_rng(2)), batch_size=8))


def test_cka_accumulator_multi_stage_matches_per_pair():
    x = torch.randn(64, 6, generator=_rng())
    fa = {"a1": x, "a2": x ** 2}
    fb = {"b1": x.relu(), "b2": torch.randn(64, 3, generator=_rng(1))}
    acc = C.CKAAccumulator()
    for i in range(0, 64, 16):
        acc.update({k: v[i:i + 16] for k, v in fa.items()}, {k: v[i:i + 16] for k, v in fb.items()})
    res = acc.result()
    assert res.shape == (2, 2) and acc.samples == 64 and acc.batches == 4
    assert res.loc["a2", "b1"] == pytest.approx(C.minibatch_cka(fa["a2"], fb["b1"], 16), abs=1e-12)


def test_constant_features_raise_naming_the_stage():
    ok = torch.randn(20, 5, generator=_rng())
    with pytest.raises(ValueError, match="'dead'.*constant"):
        CS.cka_matrix({"good": ok}, {"dead": torch.full((20, 3, 2, 2), 2.5)})
    with pytest.raises(ValueError, match="'zero'.*constant"):
        CS.cka_matrix({"zero": torch.zeros(20, 4)}, {"good": ok}, kind="rbf")
    with pytest.raises(ValueError, match="'flat'.*constant"):
        CS.cka_matrix({"flat": torch.ones(20, 4)}, {"good": ok}, kind="minibatch", batch_size=5)
    with pytest.raises(ValueError, match="constant"):
        C.linear_cka(ok, torch.ones(20, 2))


def test_cka_rejects_mismatched_samples():
    with pytest.raises(ValueError, match="same samples"):
        C.linear_cka(torch.randn(10, 2), torch.randn(11, 2))
    with pytest.raises(ValueError, match="same samples"):
        CS.cka_matrix({"a": torch.randn(10, 2)}, {"b": torch.randn(11, 2)})


def test_features_for_collects_batches_and_restores_mode(cnn, images):
    cnn.train()
    cnn.stage1[1].eval()                                   # a mixed-mode model must come back as it was
    feats = CS.features_for(cnn, images, ["stage1", "stage2", "pool"], batch_size=4)
    assert feats["stage1"].shape == (6, 8, 16, 16) and feats["stage2"].shape == (6, 16, 8, 8)
    assert feats["pool"].shape == (6, 16)
    assert cnn.training and not cnn.stage1[1].training and cnn.stage2[1].training
    with torch.no_grad(), torch.inference_mode(False):
        cnn.eval()
        direct = cnn.stage2(cnn.stage1(images))
    assert torch.allclose(feats["stage2"], direct, atol=1e-5)
    m = CS.cka_matrix(feats)
    assert m.shape == (3, 3)


def test_hook_that_never_fired_is_named(cnn, images):
    with pytest.raises(TapError, match="'unused' never fired"):
        CS.features_for(cnn, images, ["stage1", "unused"])
    with pytest.raises(ValueError, match="'unused' never fired"):
        P.capture_probe(cnn, images, ["unused"], "pool")


def test_cka_over_epochs_from_probe_files(tmp_path, cnn, images):
    torch.manual_seed(1)
    teacher = TinyCNN(w=12)
    y, idx = torch.arange(6) % 4, torch.arange(100, 106)
    t_side = P.capture_probe(teacher, images, teacher.kd_stages, teacher.kd_embedding)
    for epoch in (0, 5, 10):
        with torch.no_grad():
            for p in cnn.parameters():
                p.add_(0.05 * torch.randn_like(p))
        s_side = P.capture_probe(cnn, images, cnn.kd_stages, cnn.kd_embedding)
        P.save_probe(P.probe_path(tmp_path, epoch), epoch, images, y, idx, s_side, t_side)
    df = CE.cka_over_epochs(tmp_path)
    assert list(df.columns) == ["epoch", "student_stage", "other_stage", "pair", "against", "cka"]
    assert sorted(df.epoch.unique()) == [0, 5, 10] and len(df) == 6
    assert df.cka.between(0, 1).all()
    fin = CE.cka_over_epochs(tmp_path, against="final")
    assert np.allclose(fin[fin.epoch == 10].cka, 1.0, atol=1e-9)
    assert CE._match_stages(2, 4) == [(0, 0), (1, 3)] and CE._match_stages(3, 5) == [(0, 0), (1, 2), (2, 4)]


# ----------------------------------------------------------------------------------- relations
def test_relation_matrices_symmetric_with_right_diagonal():
    e = torch.randn(40, 16, generator=_rng())
    g = R.cosine_gram(e)
    assert g.shape == (40, 40) and np.allclose(g, g.T) and np.all(np.diag(g) == 1.0)
    assert g.min() >= -1 and g.max() <= 1
    d = R.rkd_distance_matrix(e)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0.0)
    off = d[~np.eye(40, dtype=bool)]
    assert off.mean() == pytest.approx(1.0) and (off > 0).all()
    assert np.allclose(R.rkd_distance_matrix(e * 1e5), d)         # scale-free, as in RKD-D
    ref = np.linalg.norm(e.double().numpy()[:, None] - e.double().numpy()[None], axis=2)
    assert np.allclose(d * ref[~np.eye(40, dtype=bool)].mean(), ref, atol=1e-9)


def test_rkd_angle_stats_match_brute_force():
    e = torch.randn(7, 5, generator=_rng(), dtype=torch.float64)
    st = R.rkd_angle_stats(e, bins=10)
    ref = []
    for j in range(7):
        for i in range(7):
            for k in range(7):
                if len({i, j, k}) == 3:
                    a, b = e[i] - e[j], e[k] - e[j]
                    ref.append(float(a @ b / (a.norm() * b.norm())))
    assert st["n_triplets"] == 7 * 6 * 5 and np.allclose(np.sort(st["cos"]), np.sort(ref))
    assert st["hist"].sum() == 210 and len(st["edges"]) == 11
    assert st["mean"] == pytest.approx(np.mean(ref))
    big = R.rkd_angle_stats(torch.randn(100, 4, generator=_rng()), max_samples=20)
    assert big["n_triplets"] == 20 * 19 * 18 and len(big["rows"]) == 20


def test_sort_by_class_and_boundaries():
    y = np.array([2, 0, 1, 0, 2])
    m = np.arange(25.0).reshape(5, 5)
    s, order = R.sort_by_class(m, y)
    assert list(y[order]) == [0, 0, 1, 2, 2] and list(order) == [1, 3, 2, 0, 4]
    assert s[0, 1] == m[1, 3]
    assert R.class_boundaries(y[order]) == [2, 3]


def test_relation_gap():
    e = torch.randn(30, 8, generator=_rng())
    g = R.cosine_gram(e)
    same = R.relation_gap(g, g)
    assert same["pearson"] == pytest.approx(1.0) and same["mean_abs_diff"] == 0.0
    other = R.relation_gap(g, R.cosine_gram(torch.randn(30, 8, generator=_rng(5))))
    assert other["pearson"] < 0.5 and other["mean_abs_diff"] > 0


def test_dark_knowledge_rows_sum_to_one():
    z = torch.randn(200, 5, generator=_rng()) * 3
    y = torch.arange(200) % 5
    dk = R.dark_knowledge(z, y, temperature=4.0)
    assert dk.shape == (5, 5) and np.allclose(dk.sum(1), 1.0)
    assert np.allclose(dk[2], L.soften(z[y == 2], 4.0).mean(0))
    missing = R.dark_knowledge(z[y != 3], y[y != 3], temperature=2.0)
    assert np.isnan(missing[3]).all() and np.allclose(np.delete(missing, 3, 0).sum(1), 1.0)


# ----------------------------------------------------------------------------------- attention
def test_at_map_normalisations():
    f = torch.randn(3, 5, 4, 6, generator=_rng())
    raw = A.at_map(f, p=2, normalize=None)
    assert raw.shape == (3, 4, 6) and torch.allclose(raw, (f ** 2).mean(1))
    mx = A.at_map(f)                                                        # default "max"
    assert torch.allclose(mx.amax((1, 2)), torch.ones(3)) and mx.min() >= 0
    assert torch.allclose(mx, raw / raw.amax((1, 2), keepdim=True))
    l2 = A.at_map(f, normalize="l2")
    assert torch.allclose(l2.flatten(1).norm(dim=1), torch.ones(3))
    assert torch.equal(A.at_map(torch.zeros(2, 3, 4, 4)), torch.zeros(2, 4, 4))   # no 0/0
    with pytest.raises(ValueError, match="normalize"):
        A.at_map(f, normalize="softmax")


def test_activation_attention_upsampled_and_normalised(cnn, images):
    cnn.train()
    maps = A.activation_attention(cnn, images, ["stage1", "stage2"])
    assert cnn.training
    for m in maps.values():
        assert m.shape == (6, 16, 16) and m.dtype == np.float32
        assert np.allclose(m.max(axis=(1, 2)), 1.0) and m.min() >= 0
    side = P.capture_probe(cnn, images, ["stage1", "stage2"], "pool")
    from_probe = A.stage_attention(side, size=(16, 16))
    assert np.allclose(from_probe["stage2"], maps["stage2"], atol=1e-5)
    assert A.stage_attention(side)["stage2"].shape == (6, 8, 8)


@pytest.mark.parametrize("method", ["gradcam", "saliency", "ig"])
def test_attribution_maps_on_tiny_cnn(cnn, images, method):
    cnn.train()
    cnn.fc.weight.grad = torch.full_like(cnn.fc.weight, 0.5)       # pre-existing grad must survive
    x0 = images.clone()
    if method == "gradcam":
        maps = A.gradcam(cnn, images, "stage2")
        assert A.gradcam(cnn, images, "stage2.2:in", target=1).shape == (6, 16, 16)
    elif method == "saliency":
        maps = A.saliency(cnn, images, target=torch.arange(6) % 4)
    else:
        maps, delta = A.integrated_gradients(cnn, images, n_steps=8, internal_batch_size=16,
                                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), return_delta=True)
        assert delta.shape == (6,) and np.isfinite(delta).all()
        assert A.integrated_gradients(cnn, images, target=0, n_steps=4, normalize=None).shape == (6, 16, 16)
    assert maps.shape == (6, 16, 16) and np.isfinite(maps).all() and maps.min() >= 0
    nz = maps.reshape(6, -1).max(1) > 0
    assert nz.any() and np.allclose(maps.reshape(6, -1).max(1)[nz], 1.0)
    assert cnn.training and all(m.training for m in cnn.modules())
    assert all(m.inplace for m in cnn.modules() if isinstance(m, nn.ReLU))
    assert torch.equal(cnn.fc.weight.grad, torch.full_like(cnn.fc.weight, 0.5))
    assert all(p.grad is None for n, p in cnn.named_parameters() if n != "fc.weight")
    assert torch.equal(images, x0) and not images.requires_grad


def test_gradcam_default_target_is_prediction(cnn, images):
    with torch.no_grad():
        pred = cnn.eval()(images).argmax(1)
    assert np.allclose(A.gradcam(cnn, images, "stage1"), A.gradcam(cnn, images, "stage1", target=pred))
    with pytest.raises(ValueError, match="no module named 'nope'"):
        A.gradcam(cnn, images, "nope")


def test_black_baseline():
    x = torch.zeros(2, 3, 4, 4)
    b = A.black_baseline(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.1))
    assert b.shape == x.shape and torch.allclose(b[:, 2], torch.full((2, 4, 4), -3.0))


def test_class_mean_maps_and_map_gap():
    maps = np.stack([np.full((4, 4), v, dtype=np.float32) for v in (1.0, 3.0, 5.0)])
    cm = A.class_mean_maps(maps, [0, 0, 2], num_classes=4)
    assert cm.shape == (4, 4, 4) and np.allclose(cm[0], 2.0) and np.allclose(cm[2], 5.0)
    assert np.isnan(cm[1]).all() and np.isnan(cm[3]).all()
    t = np.zeros((2, 4, 4))
    t[:, 0, 0] = 1.0
    s = t.copy()
    s[1] = 0.0
    s[1, 3, 3] = 2.0
    diff, gap = A.map_gap(t, s)
    assert diff.shape == (2, 4, 4) and np.allclose(diff, s - t)
    assert gap[0] == pytest.approx(0.0) and gap[1] == pytest.approx(1.0)
    d1, g1 = A.map_gap(t[0], 3 * t[0])
    assert d1.shape == (4, 4) and g1[0] == pytest.approx(0.0)                # scale-free
    d2, g2 = A.map_gap(np.ones((1, 8, 8)), np.ones((1, 4, 4)))               # student resized
    assert d2.shape == (1, 8, 8) and g2[0] == pytest.approx(0.0)


# ----------------------------------------------------------------------------------- logits
def test_ece_calibrated_vs_overconfident():
    g = np.random.default_rng(0)
    n, k = 50_000, 10
    z = g.normal(size=(n, k)) * 2.0
    p = L.soften(z, 1.0)
    cum = p.cumsum(1)
    y = (g.random((n, 1)) < cum).argmax(1)                      # labels drawn from the predicted p
    ece, bins = L.calibration(z, y, n_bins=15)
    assert ece < 0.02
    assert list(bins.columns) == ["bin", "lower", "upper", "confidence", "accuracy", "count", "gap"]
    assert len(bins) == 15 and bins["count"].sum() == n
    ece_over, _ = L.calibration(z * 3.0, y)                     # same labels, sharper logits
    assert ece_over > 0.1


def test_soften_agreement_kl():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    assert np.allclose(L.soften(z, 1.0).sum(1), 1.0)
    assert np.allclose(L.soften(z, 1e6), 1 / 3, atol=1e-5)
    assert L.agreement(z, z) == 1.0
    s = torch.tensor([[0.0, 2.0, -1.0], [0.0, 1.0, 0.0]])
    assert L.agreement(z, s) == 0.5
    kl = L.per_sample_kl(z, z, T=2.0)
    assert np.allclose(kl, 0.0)
    t2, s2 = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.9, 0.1]]))
    expect = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert L.per_sample_kl(t2, s2)[0] == pytest.approx(expect)
    assert L.per_sample_kl(z, s, T=4.0)[0] < L.per_sample_kl(z, s, T=1.0)[0]


def test_per_class_accuracy_and_confusion():
    z = torch.eye(3)[[0, 1, 2, 2, 1]] * 5
    y = [0, 1, 1, 2, 0]
    df = L.per_class_accuracy(z, y, classes=["a", "b", "c"])
    assert list(df["class"]) == ["a", "b", "c"]
    assert list(df["count"]) == [2, 2, 1] and np.allclose(df["accuracy"], [0.5, 0.5, 1.0])
    cm = L.confusion(z, y)
    assert cm.shape == (3, 3) and cm.sum() == 5 and cm[1, 2] == 1 and cm[0, 1] == 1
    assert np.allclose(L.confusion(z, y, normalize="true").sum(1), 1.0)


def test_disagreements_ranked():
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    s = torch.tensor([[2.9, 0.0], [0.0, 1.0], [0.0, 5.0], [0.0, 3.0]])
    df = L.disagreements(t, s, [0, 0, 1, 1], k=3, index=[10, 11, 12, 13])
    assert list(df["position"]) == [2, 1, 0]            # both disagreements first, the bigger KL first
    assert list(df["index"]) == [12, 11, 10]
    assert list(df["disagree"]) == [True, True, False]
    assert list(df["teacher_pred"]) == [0, 0, 0] and list(df["student_pred"]) == [1, 1, 0]
    assert df["kl"].iloc[0] > df["kl"].iloc[1]


# ----------------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project(method):
    et = torch.randn(30, 12, generator=_rng())
    es = et[:, :6] @ _orthogonal(6).float()
    df = E.project(et, es, torch.arange(30) % 3, method=method, index=torch.arange(30) + 7)
    assert list(df.columns) == ["model", "x", "y", "label", "index"]
    assert len(df) == 60 and set(df.model) == {"teacher", "student"}
    assert df["index"].iloc[0] == 7 and np.isfinite(df[["x", "y"]].values).all()
    assert E.tsne_perplexity(10) == 3.0 and E.tsne_perplexity(1000) == 30.0


def test_project_alignment_is_rigid():
    et = torch.randn(40, 2, generator=_rng(), dtype=torch.float64)
    es = -et @ _orthogonal(2, seed=1)                    # same cloud, rotated/reflected
    df = E.project(et, es, np.zeros(40), method="pca")
    a, b = df[df.model == "teacher"][["x", "y"]].values, df[df.model == "student"][["x", "y"]].values
    assert np.allclose(a, b, atol=1e-8)


# ----------------------------------------------------------------------------------- probes
def test_probe_roundtrip(tmp_path, cnn, images):
    side = P.capture_probe(cnn, images, ["stage1", "stage2"], "pool", batch_size=4)
    assert side["stage_names"] == ["stage1", "stage2"] and side["embedding"].shape == (6, 16)
    assert side["logits"].shape == (6, 4)
    big = dict(side, stages=[side["stages"][0], side["stages"][1] * 1e5])    # beyond float16's range
    x_view = torch.randn(50, 3, 16, 16)[:6]
    path = P.save_probe(P.probe_path(tmp_path / "run", 3), 3, x_view, torch.arange(6) % 4, torch.arange(6),
                        side, big)
    assert path.name == "probe_epoch003.pt" and path.stat().st_size < 200_000
    pr = P.load_probe(path)
    assert pr["epoch"] == 3 and pr["x"].shape == (6, 3, 16, 16) and pr["y"].dtype == torch.long
    assert pr["student"]["stages"][0].dtype == torch.float16
    assert torch.allclose(pr["student"]["stages"][1].float(), side["stages"][1], atol=1e-2, rtol=1e-3)
    assert pr["teacher"]["stages"][1].dtype == torch.float32 and torch.isfinite(pr["teacher"]["stages"][1]).all()
    # every view takes the loaded dicts directly
    m = CS.cka_matrix(pr["teacher"], pr["student"])
    assert list(m.index) == ["stage1", "stage2"] and m.loc["stage1", "stage1"] == pytest.approx(1.0, abs=1e-3)
    assert R.cosine_gram(pr["student"]["embedding"]).shape == (6, 6)
    assert L.agreement(pr["teacher"]["logits"], pr["student"]["logits"]) == 1.0
    P.save_probe(tmp_path / "run" / "probes" / "probe_epoch010.pt", 10, images, torch.zeros(6), torch.arange(6),
                 side, side)
    P.save_probe(tmp_path / "run" / "probe_epoch001.pt", 1, images, torch.zeros(6), torch.arange(6), side, side)
    assert [e for e, _ in P.list_probes(tmp_path / "run")] == [1, 3, 10]
    assert P.list_probes(tmp_path / "nothing") == []


def test_probe_validation(tmp_path, cnn, images):
    side = P.capture_probe(cnn, images, ["stage1"], "pool")
    with pytest.raises(ValueError, match="missing keys"):
        P.save_probe(tmp_path / "p.pt", 0, images, torch.zeros(6), torch.arange(6), {"logits": side["logits"]}, side)
    with pytest.raises(ValueError, match="rows"):
        P.save_probe(tmp_path / "p.pt", 0, images[:5], torch.zeros(5), torch.arange(5), side, side)
    torch.save({"epoch": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a probe file"):
        P.load_probe(tmp_path / "bad.pt")


def test_stage_maps_one_pass_matches_captum_and_at(cnn, images):
    cnn.train()
    out = A.stage_maps(cnn, images, ["stage1", "stage2"])
    assert cnn.training and all(p.grad is None for p in cnn.parameters())
    assert set(out) == {"at", "gradcam", "target", "logits"} and out["logits"].shape == (6, 4)
    at = A.activation_attention(cnn, images, ["stage1", "stage2"])
    for s in ("stage1", "stage2"):
        assert out["gradcam"][s].shape == (6, 16, 16)
        assert np.allclose(out["gradcam"][s], A.gradcam(cnn, images, s), atol=1e-5)
        assert np.allclose(out["at"][s], at[s], atol=1e-6)
    t1 = A.stage_maps(cnn, images, ["stage2"], target=1)
    assert np.allclose(t1["gradcam"]["stage2"], A.gradcam(cnn, images, "stage2", target=1), atol=1e-5)
    assert (t1["target"] == 1).all()
    with pytest.raises(TapError, match="'unused' never fired"):
        A.stage_maps(cnn, images, ["unused"])


def test_cka_matrix_low_precision_grams_and_bad_values():
    g = _rng()
    base = torch.randn(300, 16, generator=g)
    fa = {"a": (base @ torch.randn(16, 2048, generator=g)).relu(), "b": torch.randn(300, 64, generator=g)}
    fb = {"c": (base @ torch.randn(16, 1024, generator=g)).tanh() + 3.0}
    ref = CS.cka_matrix(fa, fb, gram_dtype=torch.float64)
    assert np.allclose(CS.cka_matrix(fa, fb).values, ref.values, atol=1e-6)
    assert np.allclose(CS.cka_matrix(fa, fb, gram_dtype=torch.bfloat16).values, ref.values, atol=1e-3)
    bad = torch.randn(300, 8)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="'bad'.*NaN"):
        CS.cka_matrix({"bad": bad}, fb)
    with pytest.raises(ValueError, match="'x'.*NaN"):
        C.linear_cka(bad, bad)


def test_cached_stage_grams_give_the_same_matrix():
    fa = {"a": torch.randn(40, 3, 4, 4, generator=_rng()), "b": torch.randn(40, 7, generator=_rng(1))}
    fb = {"c": fa["a"].relu(), "d": fa["b"] ** 3}
    ga, gb = CS.stage_grams(fa), CS.stage_grams(fb)
    assert ga.grams.shape == (2, 40 * 40) and ga.names == ("a", "b") and ga.n == 40
    ref = CS.cka_matrix(fa, fb)
    assert np.allclose(CS.cka_from_grams(ga, gb).values, ref.values)
    assert np.allclose(CS.cka_matrix(ga, fb).values, ref.values)
    with pytest.raises(ValueError, match="same samples"):
        CS.cka_from_grams(ga, CS.stage_grams({"e": torch.randn(39, 2)}))
    with pytest.raises(ValueError, match="mix"):
        CS.cka_from_grams(ga, CS.stage_grams(fb, kind="rbf"))


def test_cka_over_epochs_loaded_dicts_and_nan_policy():
    x = torch.randn(12, 3, 4, 4, generator=_rng())
    t_side = {"logits": torch.randn(12, 3), "stages": [x, x.relu()], "stage_names": ["t1", "t2"],
              "embedding": torch.randn(12, 5)}
    good = dict(t_side, stage_names=["s1", "s2"])
    dead = dict(good, stages=[x, torch.zeros(12, 2, 2, 2)])
    probes = [{"epoch": e, "x": x, "y": torch.zeros(12), "index": torch.arange(12), "student": st, "teacher": t_side}
              for e, st in ((0, dead), (1, good))]
    with pytest.raises(ValueError, match="'s2'.*constant"):
        CE.cka_over_epochs(probes)
    df = CE.cka_over_epochs(probes, errors="nan")
    assert np.isnan(df.cka.iloc[1]) and df.cka.iloc[0] == pytest.approx(1.0)
    assert df.cka.iloc[3] == pytest.approx(1.0) and list(df.pair[:2]) == ["s1 ↔ t1", "s2 ↔ t2"]
    assert df.cka.iloc[0] == pytest.approx(C.linear_cka(x, x))
    mb = CE.cka_over_epochs(probes[1:], kind="minibatch", pairs=[(0, "t2")])
    assert len(mb) == 1 and mb.other_stage.iloc[0] == "t2"
