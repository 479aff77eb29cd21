"""Distillation criteria on hand-worked inputs, identities, invariances (explorer.kd.functional)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.kd import functional as KF

torch.manual_seed(0)


def _np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ response

def test_kd_two_class_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[4 * math.log(3.0), 0.0]])          # at T=4: p_t = (3/4, 1/4)
    expected = 16 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert KF.kd_loss(s, t, 4.0).item() == pytest.approx(expected, rel=1e-5)
    assert KF.kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_parts_by_hand_and_kd_identity():
    s = torch.tensor([[1.0, 0.5, -1.0, 0.0]])
    t = torch.tensor([[2.0, -0.5, 0.3, 1.0]])
    y = torch.tensor([3])
    T = 2.0
    ps, pt = _np_softmax(s.numpy() / T)[0], _np_softmax(t.numpy() / T)[0]
    bs, bt = np.array([ps[3], 1 - ps[3]]), np.array([pt[3], 1 - pt[3]])
    tckd = T ** 2 * np.sum(bt * np.log(bt / bs))
    qs, qt = np.delete(ps, 3) / (1 - ps[3]), np.delete(pt, 3) / (1 - pt[3])
    nckd = T ** 2 * np.sum(qt * np.log(qt / qs))
    got_t, got_n, p_target = KF.tckd_nckd(s, t, y, T)
    assert got_t.item() == pytest.approx(tckd, rel=1e-5)
    assert got_n.item() == pytest.approx(nckd, rel=1e-5)
    # Zhao et al. eq. (3): KD = TCKD + (1 - p_t) NCKD (per sample)
    kd = KF.kd_loss(s, t, T).item()
    assert kd == pytest.approx(tckd + (1 - pt[3]) * nckd, rel=1e-5)
    assert p_target.item() == pytest.approx(pt[3], rel=1e-6)
    assert KF.dkd_loss(s, t, y, 1.0, 8.0, T).item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)


def test_dkd_zero_when_identical():
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert KF.dkd_loss(z, z.clone(), y).item() == pytest.approx(0.0, abs=1e-5)


def test_dist_matches_numpy_pearson():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    T, beta, gamma = 2.0, 1.5, 0.5
    ys, yt = _np_softmax(s.numpy() / T), _np_softmax(t.numpy() / T)
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(6)])
    intra = 1 - np.mean([np.corrcoef(ys[:, j], yt[:, j])[0, 1] for j in range(5)])
    got = KF.dist_loss(s, t, beta, gamma, T).item()
    assert got == pytest.approx(T ** 2 * (beta * inter + gamma * intra), rel=1e-4)
    assert KF.dist_loss(s, s.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------ feature

def test_at_on_a_2x2_map_by_hand():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.ones(1, 1, 2, 2)
    a_s = np.array([1, 4, 9, 16]) / math.sqrt(354)
    a_t = np.ones(4) / 2
    assert KF.at_loss(s, t).item() == pytest.approx(np.mean((a_s - a_t) ** 2), rel=1e-5)


def test_at_identity_scaling_and_spatial_error():
    f = torch.rand(4, 8, 4, 4)
    assert KF.at_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-8)
    g = torch.rand(4, 16, 4, 4)
    assert KF.at_loss(3.0 * f, g).item() == pytest.approx(KF.at_loss(f, g).item(), rel=1e-4)
    with pytest.raises(ValueError, match="spatial sizes differ"):
        KF.at_loss(f, torch.rand(4, 8, 2, 2))


def test_nst_matches_numpy_mmd():
    s, t = torch.rand(2, 3, 2, 2), torch.rand(2, 5, 2, 2)
    def norm(x):
        x = x.reshape(x.shape[0], x.shape[1], -1).numpy()
        return x / np.linalg.norm(x, axis=2, keepdims=True)
    fs, ft = norm(s), norm(t)
    k = lambda a, b: np.mean(np.einsum("bid,bjd->bij", a, b) ** 2)  # noqa: E731
    expected = k(ft, ft) + k(fs, fs) - 2 * k(fs, ft)
    assert KF.nst_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert KF.nst_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert KF.nst_loss(5 * s, t).item() == pytest.approx(KF.nst_loss(s, t).item(), rel=1e-4)


def test_fsp_matrix_by_hand_and_pooling():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])           # (1, 1, 2, 2)
    b = torch.stack([torch.ones(2, 2), torch.tensor([[0.0, 1.0], [0.0, 1.0]])]).unsqueeze(0)  # (1, 2, 2, 2)
    g = KF.fsp_matrix(a, b)
    assert g.shape == (1, 1, 2)
    assert g[0, 0].tolist() == pytest.approx([10 / 4, 6 / 4])
    big = torch.rand(2, 3, 4, 4)
    small = torch.rand(2, 5, 2, 2)
    assert KF.fsp_matrix(big, small).shape == (2, 3, 5)
    feats = [torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)]
    assert KF.fsp_loss(feats, [f.clone() for f in feats]).item() == 0.0


def test_vid_nll_and_ofd_partial_l2_by_hand():
    mu, tgt = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
    var = torch.tensor([2.0])
    assert KF.vid_nll(mu, tgt, var).item() == pytest.approx(0.5 * ((1 / 2 + 9 / 2) / 2 + math.log(2)))
    # teacher (-2, -0.5, 1), margin -1 -> target (-1, -0.5, 1)
    t = torch.tensor([[[[-2.0, -0.5, 1.0]]]])
    s = torch.tensor([[[[-3.0, 0.0, 0.0]]]])
    # s=-3 below non-positive target: free; s=0 above -0.5: (0.5)^2; s=0 vs positive 1: 1
    assert KF.ofd_loss(s, t, torch.tensor([-1.0])).item() == pytest.approx(0.25 + 1.0)


def test_hcl_zero_when_identical_and_positive_otherwise():
    f = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 2, 2)]
    assert KF.hcl_loss(f, [x.clone() for x in f]).item() == 0.0
    # full-size only map 1x1: plain MSE
    a, b = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    assert KF.hcl_loss([a], [b]).item() == pytest.approx(1.0)


# ------------------------------------------------------------------ relation

def test_sp_on_b2_by_hand():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])              # Gram [[1,1],[1,2]]
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])              # Gram I
    gs = np.array([[1, 1], [1, 2]], float)
    gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
    expected = np.sum((np.eye(2) - gs) ** 2) / 4
    assert KF.sp_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_sp_identity_scale_and_spatial_mismatch():
    s, t = torch.rand(4, 8, 4, 4), torch.rand(4, 16, 2, 2)
    assert KF.sp_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert KF.sp_loss(7 * s, t).item() == pytest.approx(KF.sp_loss(s, t).item(), rel=1e-4)


def _np_rkd(s, t):
    def dist(e):
        return np.linalg.norm(e[:, None] - e[None], axis=2)
    def ang(e):
        d = e[None] - e[:, None]
        d = d / np.maximum(np.linalg.norm(d, axis=2, keepdims=True), 1e-12)
        return np.einsum("ijd,ikd->ijk", d, d).ravel()
    def huber(a, b):
        x = np.abs(a - b)
        return np.mean(np.where(x < 1, 0.5 * x ** 2, x - 0.5))
    ds, dt = dist(s), dist(t)
    ds, dt = ds / ds[ds > 0].mean(), dt / dt[dt > 0].mean()
    return huber(ds, dt), huber(ang(s), ang(t))


def test_rkd_matches_numpy_and_is_scale_invariant():
    s, t = torch.randn(5, 4), torch.randn(5, 6)
    ld, la = _np_rkd(s.double().numpy(), t.double().numpy())
    assert KF.rkd_loss(s, t, 1.0, 0.0).item() == pytest.approx(ld, rel=1e-4)
    assert KF.rkd_loss(s, t, 0.0, 1.0).item() == pytest.approx(la, rel=1e-4)
    assert KF.rkd_loss(10 * s, t).item() == pytest.approx(KF.rkd_loss(s, t).item(), rel=1e-4)
    assert KF.rkd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    s.requires_grad_()
    KF.rkd_loss(s, t).backward()
    assert torch.isfinite(s.grad).all()


def test_pkt_matches_numpy_and_is_scale_invariant():
    s, t = torch.randn(4, 3), torch.randn(4, 5)
    def cond(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        k = (x @ x.T + 1) / 2
        return k / k.sum(1, keepdims=True)
    ps, pt = cond(s.double().numpy()), cond(t.double().numpy())
    assert KF.pkt_loss(s, t).item() == pytest.approx(np.mean(pt * np.log(pt / ps)), rel=1e-4)
    assert KF.pkt_loss(3 * s, t).item() == pytest.approx(KF.pkt_loss(s, t).item(), rel=1e-4)
    assert KF.pkt_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_cc_taylor_kernel_converges_to_rbf():
    e = torch.randn(5, 8).double()
    n = F.normalize(e, dim=1)
    rbf = torch.exp(-0.4 * torch.cdist(n, n).pow(2))
    assert torch.allclose(KF.cc_kernel(e, 0.4, order=12), rbf, atol=1e-9)
    p2 = KF.cc_kernel(e, 0.4, order=2)
    d = n @ n.t()
    assert torch.allclose(p2, math.exp(-0.8) * (1 + 0.8 * d + 0.32 * d ** 2))
    assert KF.cc_loss(e, e.clone()).item() == 0.0


def test_crd_nce_loss_by_hand():
    x = torch.tensor([[2.0, 0.5, 1.0]])                     # positive, 2 negatives, N = 4
    m_pn = 2 / 4
    expected = -(math.log(2 / (2 + m_pn)) + math.log(m_pn / (0.5 + m_pn)) + math.log(m_pn / (1 + m_pn)))
    assert KF.crd_nce_loss(x, 4).item() == pytest.approx(expected, rel=1e-5)


def test_irg_edge_zero_when_identical_and_scale_free():
    f, g = torch.randn(6, 4, 2, 2), torch.randn(6, 9)
    assert KF.irg_edge_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-10)
    assert KF.irg_edge_loss(2 * f, g).item() == pytest.approx(KF.irg_edge_loss(f, g).item(), rel=1e-4)


def test_irg_transform_by_hand_pools_and_averages_channels():
    # shallow: 2 channels at 2x2, deep: 1 channel at 1x1 -> shallow pooled to 1x1, its 2 channels averaged
    shallow = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 4.0]]],    # means 2, 1 -> 1.5
                            [[[2.0, 2.0], [2.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]]]])   # means 2, 4 -> 3
    deep = torch.tensor([[[[0.5]]], [[[5.0]]]])
    d = torch.tensor([(1.5 - 0.5) ** 2, (3.0 - 5.0) ** 2])
    torch.testing.assert_close(KF.irg_transform(shallow, deep), d / d.max())


def test_irg_transform_loss_zero_when_identical_and_scale_free():
    a, b = torch.randn(6, 8, 4, 4), torch.randn(6, 16, 2, 2)
    c, e = torch.randn(6, 4, 4, 4), torch.randn(6, 12, 2, 2)   # 12 -> 4 channels: groups of 3
    assert KF.irg_transform_loss(a, b, a.clone(), b.clone()).item() == pytest.approx(0.0, abs=1e-12)
    base = KF.irg_transform_loss(a, b, c, e).item()
    assert base > 0 and KF.irg_transform_loss(3 * a, 3 * b, c, e).item() == pytest.approx(base, rel=1e-5)
