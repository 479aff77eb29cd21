"""The methods added with issue 14 (mlkd, nkd, wttm, catkd, kdsvd, ab, ft) and the init-stage contract: each
loss against a value computed by hand from the official formula (written out here, independently of
explorer.kd), its identity/minimum, and where gradients go (the student and the method's own modules, never
the teacher)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from explorer.kd import Batch, Outputs, PairContext, get_method, list_methods
from explorer.kd import functional_extra as KX
from explorer.kd.base import feature_parameters
from explorer.kd.functional import kd_loss
from explorer.models import create_model
from explorer.models.outputs import TapSpecs, forward_outputs
from explorer.schemes.base import RunContext
from explorer.schemes.init_stage import run_init_stages

NEW = ("mlkd", "nkd", "wttm", "catkd", "kdsvd", "ab", "ft")
B, K = 6, 10
S_STAGES = ((16, 8, 8), (16, 8, 8), (32, 4, 4), (64, 2, 2))
T_STAGES = ((32, 8, 8), (32, 8, 8), (64, 4, 4), (128, 2, 2))


def ctx_for(s=S_STAGES, t=T_STAGES, k=K, epochs=10, pairs=None):
    return PairContext(s, t, s[-1][0], t[-1][0], k, 100, epochs, 10, pairs)


def outputs(stages, grad=True, seed=0, k=K):
    g = torch.Generator().manual_seed(seed)
    leaf = lambda x: x.requires_grad_(grad)  # noqa: E731
    return Outputs(leaf(torch.randn(B, k, generator=g) * 3),
                   [leaf(torch.randn(B, *sh, generator=g).relu()) for sh in stages],
                   [leaf(torch.randn(B, *sh, generator=g)) for sh in stages],
                   leaf(torch.randn(B, stages[-1][0], generator=g)))


def batch(y=None):
    return Batch(torch.zeros(B, 3, 8, 8), torch.arange(B) % K if y is None else y, torch.arange(B), progress=0.5)


class Head(nn.Module):
    def __init__(self, c, k=K):
        super().__init__()
        self.body = nn.Conv2d(3, c, 1)
        self.fc = nn.Linear(c, k)


def build(key, ctx, student_head=None):
    m = get_method(key)(ctx)
    if hasattr(m, "attach_teacher"):
        m.attach_teacher(Head(ctx.teacher_embedding, ctx.num_classes))
    if hasattr(m, "attach_student"):
        m.attach_student(student_head or Head(ctx.student_embedding, ctx.num_classes))
    return m


def softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------------------------------- the catalogue
def test_the_new_methods_are_registered_with_metadata_from_the_official_code():
    assert set(NEW) <= set(list_methods())
    assert len(list_methods()) >= 25
    for key in NEW:
        cls = get_method(key)
        d = cls.describe()
        assert cls.paper.authors and cls.paper.title and cls.paper.year >= 2018 and cls.equation
        assert "official" in cls.convention.lower() or "repdistiller" in cls.convention.lower() \
            or "mdistiller" in cls.convention.lower()
        for h in cls.hparams:
            assert h.help and (h.low is None or h.low <= h.default <= h.high), (key, h.name)
        if cls.category == "response":   # every logit-based method has the logit-standardisation switch
            assert {h.name: h for h in cls.hparams}["standardize"].default is False
        assert d["init_stage"] == (key in ("ab", "ft"))


@pytest.mark.parametrize("key", NEW)
def test_gradients_reach_the_student_and_the_methods_modules_never_the_teacher(key):
    torch.manual_seed(0)
    ctx = ctx_for()
    head = Head(ctx.student_embedding)
    m = build(key, ctx, head)
    s, t = outputs(S_STAGES, seed=1), outputs(T_STAGES, seed=2)   # t requires grad: the method must detach it
    terms = m(s, t, batch())
    assert terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values()), terms
    sum(terms.values()).backward()
    leaves = [s.logits, s.embedding, *s.stages, *s.preact]
    assert any(x.grad is not None and x.grad.abs().sum() > 0 for x in leaves), "no gradient reached the student"
    assert all(torch.isfinite(x.grad).all() for x in leaves if x.grad is not None)
    assert all(x.grad is None for x in [t.logits, t.embedding, *t.stages, *t.preact]), "the teacher got gradient"
    for name, p in m.named_parameters():
        if name.startswith("paraphraser."):   # FT's paraphraser is frozen in the main stage (trained by the init)
            assert p.grad is None and not p.requires_grad
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if key == "catkd":   # the student's CAMs are its own classifier's: the head learns, and is not the method's
        assert head.fc.weight.grad is not None and head.fc.weight.grad.abs().sum() > 0
        assert not list(m.parameters()) and "teacher_weight" in dict(m.named_buffers())


# ---------------------------------------------------------------------------------------------- MLKD
def _mlkd_by_hand(zs, zt, temps):
    """KD_ours.forward_train with weak = strong = the batch, from its definitions."""
    zs, zt = zs.tolist(), zt.tolist()
    b, k = len(zs), len(zs[0])

    def share_at_or_below_median(values):
        return float(np.mean(np.asarray(values) <= np.percentile(values, 50)))

    p1 = [softmax(r) for r in zt]
    m_i = share_at_or_below_median([max(r) for r in p1])
    m_c = share_at_or_below_median([sum(r[c] for r in p1) for c in range(k)])
    inst = cls = bat = 0.0
    for T in temps:
        ps, pt = [softmax(r, T) for r in zs], [softmax(r, T) for r in zt]
        inst += T * T * sum(sum(a * math.log(a / c) for a, c in zip(rt, rs)) for rt, rs in zip(pt, ps)) / b
        gram = lambda P, x, y: sum(row[x] * row[y] for row in P)  # noqa: E731
        cls += sum((gram(pt, x, y) - gram(ps, x, y)) ** 2 for x in range(k) for y in range(k)) / k
        dot = lambda P, i, j: sum(a * c for a, c in zip(P[i], P[j]))  # noqa: E731
        bat += sum((dot(pt, i, j) - dot(ps, i, j)) ** 2 for i in range(b) for j in range(b)) / b
    return {"mlkd_instance": (1 + m_i) * inst, "mlkd_class": m_c * cls, "mlkd_batch": m_i * bat}, m_i, m_c


def test_mlkd_equals_the_official_loss_by_hand():
    g = torch.Generator().manual_seed(3)
    zs = torch.randn(5, 4, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    want, m_i, m_c = _mlkd_by_hand(zs, zt, (4.0, 3.0, 5.0, 2.0, 6.0))
    assert m_i == pytest.approx(3 / 5)   # 5 samples: the median one counts, so the "mask" keeps 3 of 5
    ctx = PairContext((), (), 0, 0, 4, 10, 1, 1)
    got = get_method("mlkd")(ctx)(Outputs(zs), Outputs(zt), None)
    assert set(got) == set(want)
    for name in want:
        assert got[name].item() == pytest.approx(want[name], rel=1e-6), name
    other = get_method("mlkd")(ctx, temperature=8.0)(Outputs(zs), Outputs(zt), None)
    want8, _, _ = _mlkd_by_hand(zs, zt, (8.0, 3.0, 5.0, 2.0, 6.0))
    assert other["mlkd_instance"].item() == pytest.approx(want8["mlkd_instance"], rel=1e-6)


def test_mlkd_is_zero_at_identity_and_standardize_changes_it():
    ctx = ctx_for()
    s = outputs(S_STAGES, seed=1)
    t = Outputs(s.logits.detach().clone())
    terms = get_method("mlkd")(ctx)(s, t, batch())
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in terms.values())
    t2 = outputs(T_STAGES, False, seed=2)
    plain = get_method("mlkd")(ctx)(s, t2, batch())["mlkd_instance"].item()
    ls = get_method("mlkd")(ctx, standardize=True)(s, t2, batch())["mlkd_instance"].item()
    assert ls != pytest.approx(plain, rel=1e-3)


# ---------------------------------------------------------------------------------------------- NKD
def test_nkd_equals_the_official_loss_by_hand():
    zs = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 1.0]], dtype=torch.float64)
    zt = torch.tensor([[3.0, 1.0, 0.0, -2.0], [1.0, 0.5, 4.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    T, gamma = 3.0, 3.5
    target = non = 0.0
    for a, b, c in zip(zs.tolist(), zt.tolist(), y.tolist()):
        target += -softmax(b)[c] * math.log(softmax(a)[c])
        qs = softmax([v for j, v in enumerate(a) if j != c], T)
        qt = softmax([v for j, v in enumerate(b) if j != c], T)
        non += -gamma * T * T * sum(p * math.log(q) for p, q in zip(qt, qs))
    ctx = PairContext((), (), 0, 0, 4, 10, 1, 1)
    got = get_method("nkd")(ctx)(Outputs(zs), Outputs(zt), Batch(zs, y, torch.arange(2)))
    assert got["nkd_target"].item() == pytest.approx(target / 2, rel=1e-9)
    assert got["nkd_non_target"].item() == pytest.approx(non / 2, rel=1e-9)


def test_nkd_non_target_part_is_at_its_minimum_when_the_student_equals_the_teacher():
    zt = torch.randn(B, K, dtype=torch.float64)
    y = torch.arange(B) % K
    zs = zt.clone().requires_grad_(True)
    parts = KX.nkd_losses(zs, zt, y, 3.0, 3.5)
    (g,) = torch.autograd.grad(parts["non_target"], zs)
    assert g.abs().max().item() < 1e-12   # a cross-entropy: stationary (its minimum) at q_s = q_t, not 0
    assert parts["non_target"].item() > 0


# ---------------------------------------------------------------------------------------------- WTTM
def test_wttm_equals_the_official_loss_by_hand():
    zs = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    zt = torch.tensor([[4.0, 1.0, 0.0], [1.0, 0.5, 6.0]], dtype=torch.float64)
    gamma, want = 0.2, 0.0
    for a, b in zip(zs.tolist(), zt.tolist()):
        pw = [p ** gamma for p in softmax(b)]
        u = sum(pw)
        q = [v / u for v in pw]
        want += u * sum(qq * math.log(qq / ps) for qq, ps in zip(q, softmax(a)))
    ctx = PairContext((), (), 0, 0, 3, 10, 1, 1)
    got = get_method("wttm")(ctx)(Outputs(zs), Outputs(zt), None)["wttm"]
    assert got.item() == pytest.approx(want / 2, rel=1e-9)


def test_wttm_is_zero_at_the_transformed_teacher_and_is_kd_at_gamma_one():
    zt = torch.randn(B, K, dtype=torch.float64) * 3
    assert KX.wttm_loss(0.2 * zt + 1.5, zt, 0.2).item() == pytest.approx(0.0, abs=1e-12)
    zs = torch.randn(B, K, dtype=torch.float64)
    assert KX.wttm_loss(zs, zt, 1.0).item() == pytest.approx(kd_loss(zs, zt, 1.0).item(), rel=1e-9)


# ---------------------------------------------------------------------------------------------- CAT-KD
def test_cat_loss_equals_the_official_form_by_hand():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 5, 2, 2, generator=g)
    ws, wt = torch.randn(2, 3, generator=g), torch.randn(2, 5, generator=g)

    def cams(f, w):
        return [[[[sum(w[k][c] * f[b][c][h][x] for c in range(len(w[0]))) for x in range(2)] for h in range(2)]
                 for k in range(2)] for b in range(2)]

    cs, ct = cams(fs.tolist(), ws.tolist()), cams(ft.tolist(), wt.tolist())
    mean = lambda m: sum(sum(r) for r in m) / 4  # noqa: E731
    want1 = sum((mean(cs[b][k]) - mean(ct[b][k])) ** 2 for b in range(2) for k in range(2)) / 4   # resolution 1
    s_cam, t_cam = KX.class_activation_maps(fs, ws), KX.class_activation_maps(ft, wt)
    assert KX.cat_loss(s_cam, t_cam, 1).item() == pytest.approx(want1, rel=1e-5)
    norm = lambda m: [[v / math.sqrt(sum(u * u for r in m for u in r)) for v in r] for r in m]  # noqa: E731
    want2 = sum((a - c) ** 2 for b in range(2) for k in range(2)
                for ra, rc in zip(norm(cs[b][k]), norm(ct[b][k])) for a, c in zip(ra, rc)) / 16
    assert KX.cat_loss(s_cam, t_cam, 2, normalize=True).item() == pytest.approx(want2, rel=1e-5)


def test_catkd_uses_both_classifiers_and_is_zero_at_identity():
    ctx = ctx_for(S_STAGES, S_STAGES)
    head_s, head_t = Head(64), Head(64)
    head_t.load_state_dict(head_s.state_dict())
    m = get_method("catkd")(ctx)
    with pytest.raises(RuntimeError, match="attach"):
        m(outputs(S_STAGES), outputs(S_STAGES), batch())
    m.attach_teacher(head_t)
    m.attach_student(head_s)
    assert torch.equal(m.teacher_weight, head_t.fc.weight.detach())
    assert set(m.state_dict()) == {"teacher_weight"}   # the student's head is referenced, not owned
    s = outputs(S_STAGES, seed=1)
    t = Outputs(s.logits.detach(), [x.detach().clone() for x in s.stages])
    assert m(s, t, batch())["cat"].item() == pytest.approx(0.0, abs=1e-10)
    # at resolution 1 a CAM pools to the logits without their bias: GAP(W F) = W GAP(F)
    m1 = get_method("catkd")(ctx, resolution=1)
    m1.attach_teacher(Head(64))
    m1.attach_student(head_s)
    t2 = outputs(S_STAGES, False, seed=2)
    z_s = head_s.fc(s.stages[-1].mean((2, 3))) - head_s.fc.bias
    z_t = _no_bias_linear(t2.stages[-1].mean((2, 3)), m1.teacher_weight)
    assert m1(s, t2, batch())["cat"].item() == pytest.approx(((z_s - z_t) ** 2).mean().item(), rel=1e-5)


def _no_bias_linear(x, w):
    return x @ w.t()


def test_catkd_needs_the_stage_that_feeds_the_classifier():
    ctx = PairContext(S_STAGES, T_STAGES, 64, 100, K, 100, 1, 1)   # teacher classifier reads 100, stage has 128
    with pytest.raises(ValueError, match="teacher's stage 3 has 128 channels but its classifier reads 100"):
        get_method("catkd")(ctx)


# ---------------------------------------------------------------------------------------------- KD-SVD
def _kdsvd_by_hand(rows_s, rows_t, relative_sign):
    """One sample, each stage a 1 x W matrix: its only right singular vector is the unit row (up to sign); the
    student's is aligned to the teacher's; the teacher's normalised singular value is 1. relative_sign is the
    product of the signs LAPACK gives the teacher's two vectors, which the RBF of their components depends on."""
    unit = lambda r: [v / math.sqrt(sum(u * u for u in r)) for v in r]  # noqa: E731
    vt = [unit(rows_t[0]), [relative_sign * v for v in unit(rows_t[1])]]
    vs = []
    for rs, v in zip(rows_s, vt):
        u = unit(rs)
        vs.append([math.copysign(1.0, sum(a * b for a, b in zip(u, v))) * a for a in u])
    rbf = lambda v: [[math.exp(-(a - b) ** 2 / 8) for b in v[0]] for a in v[1]]  # noqa: E731
    return sum((a - b) ** 2 for ra, rb in zip(rbf(vs), rbf(vt)) for a, b in zip(ra, rb))


def test_kdsvd_equals_the_mdistiller_form_by_hand():
    rows_s = [[1.0, -2.0, 0.5], [0.3, 1.2]]
    rows_t = [[2.0, 1.0, -1.0], [-0.7, 0.4]]
    fs = [torch.tensor(r).view(1, 1, 1, -1) for r in rows_s]   # (B, C, H, W) = (1, 1, 1, W)
    ft = [torch.tensor(r).view(1, 1, 1, -1) for r in rows_t]
    got = KX.kdsvd_loss(fs, ft, k=1).item()
    candidates = [_kdsvd_by_hand(rows_s, rows_t, sign) for sign in (1.0, -1.0)]
    assert candidates[0] != pytest.approx(candidates[1], rel=1e-3)
    assert any(got == pytest.approx(c, rel=1e-5) for c in candidates), (got, candidates)
    # layout=original reads H*W x C: the same rows laid along the channels give the same loss
    fs_o = [torch.tensor(r).view(1, -1, 1, 1) for r in rows_s]
    ft_o = [torch.tensor(r).view(1, -1, 1, 1) for r in rows_t]
    assert KX.kdsvd_loss(fs_o, ft_o, k=1, layout="original").item() == pytest.approx(got, rel=1e-5)


def test_kdsvd_is_zero_at_identity_and_its_gradient_stays_finite_on_dead_maps():
    ctx = ctx_for(S_STAGES, S_STAGES)
    m = get_method("kdsvd")(ctx)
    s = outputs(S_STAGES, seed=4)
    t = Outputs(s.logits.detach(), [x.detach().clone() for x in s.stages])
    assert m(s, t, batch())["kdsvd"].item() == pytest.approx(0.0, abs=1e-8)
    dead = [torch.zeros(B, *sh, requires_grad=True) for sh in S_STAGES]   # repeated (zero) singular values
    loss = m(Outputs(s.logits, dead), outputs(S_STAGES, False, seed=5), batch())["kdsvd"]
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in dead[1:])
    with pytest.raises(ValueError, match="equal channel counts"):
        get_method("kdsvd")(ctx_for(), layout="original")


# ---------------------------------------------------------------------------------------------- AB
def test_ab_equals_repdistillers_loss_by_hand():
    s1 = [[[[-1.5, -0.5, 0.2]]], [[[0.5, 2.0, -0.2]]]]       # (B=2, C=1, H=1, W=3)
    t1 = [[[[-1.0, 0.3, 0.0]]], [[[-0.1, 1.0, 2.0]]]]
    s2 = [[[[0.9, -3.0]]], [[[1.5, -0.9]]]]                   # (2, 1, 1, 2)
    t2 = [[[[1.0, 0.5]]], [[[-1.0, -2.0]]]]
    m = 1.0

    def alt(s, t):
        if t <= 0 and s > -m:
            return (s + m) ** 2
        if t > 0 and s <= m:
            return (s - m) ** 2
        return 0.0

    flat = lambda x: [v for b in x for c in b for h in c for v in h]  # noqa: E731
    stage = lambda s, t: sum(alt(a, b) for a, b in zip(flat(s), flat(t)))  # noqa: E731
    want = (0.5 * stage(s1, t1) + 1.0 * stage(s2, t2)) / 2 * 3 / 1000   # weights 2^(i-n+1): 1/2, 1
    got = KX.ab_loss([torch.tensor(s1), torch.tensor(s2)], [torch.tensor(t1), torch.tensor(t2)], m)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_ab_is_zero_beyond_the_margin_on_the_right_side():
    t = [torch.randn(B, *sh) for sh in S_STAGES[1:]]
    s = [torch.where(x > 0, 1.5, -1.5) for x in t]
    assert KX.ab_loss(s, t, 1.0).item() == 0.0
    m = get_method("ab")(ctx_for(S_STAGES, S_STAGES))
    assert all(c.identity for c in m.connectors) and m.default_weight == 0.0 and m.init_epochs() == 2


# ---------------------------------------------------------------------------------------------- FT
def test_ft_loss_equals_both_forms_by_hand():
    fs = [[[[1.0, -2.0]], [[0.5, 1.0]]]]    # (B=1, C=2, H=1, W=2)
    ft = [[[[2.0, 0.0]], [[-1.0, 3.0]]]]
    unit = lambda r: [v / math.sqrt(sum(u * u for u in r)) for v in r]  # noqa: E731
    sq_mean = lambda f: [(f[0][0][0][w] ** 2 + f[0][1][0][w] ** 2) / 2 for w in range(2)]  # noqa: E731
    want_rep = sum(abs(a - b) for a, b in zip(unit(sq_mean(fs)), unit(sq_mean(ft)))) / 2
    flat = lambda f: [f[0][c][0][w] for c in range(2) for w in range(2)]  # noqa: E731
    want_paper = sum(abs(a - b) for a, b in zip(unit(flat(fs)), unit(flat(ft)))) / 4
    a, b = torch.tensor(fs), torch.tensor(ft)
    assert KX.ft_loss(a, b).item() == pytest.approx(want_rep, rel=1e-6)
    assert KX.ft_loss(a, b, "paper").item() == pytest.approx(want_paper, rel=1e-6)
    assert KX.ft_loss(a, a.clone()).item() == 0.0


def test_ft_builds_repdistillers_paraphraser_and_translator():
    m = get_method("ft")(ctx_for())
    convs = [mod for mod in m.paraphraser.modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 128), (128, 64), (64, 64), (64, 64),
                                                                 (64, 128), (128, 128)]
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.paraphraser.modules())
    assert [c.out_channels for c in m.translator if isinstance(c, nn.Conv2d)] == [64, 64, 64]
    assert not any(p.requires_grad for p in m.paraphraser.parameters())
    t = outputs(T_STAGES, False, seed=2)
    assert set(m.init_loss(None, t, batch())) == {"ft_init"}


# ---------------------------------------------------------------------------------------------- the init stage
class _Data:
    """The dataset surface the init stage reads: shuffled training batches of (x, y, index)."""

    def __init__(self, n=24, shape=(1, 8, 8), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, *shape, generator=g), torch.arange(n) % 10

    def batches(self, split, batch_size, shuffle=False, augment=False, generator=None):
        order = torch.randperm(len(self.x), generator=generator) if shuffle else torch.arange(len(self.x))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx], idx


def _init_setup(key, epochs=8, **hp):
    torch.manual_seed(0)
    student = create_model("cnn_tiny", num_classes=10, in_channels=1, image_size=8)
    teacher = create_model("cnn_small", num_classes=10, in_channels=1, image_size=8).eval().requires_grad_(False)
    s_specs, t_specs = TapSpecs.of(student), TapSpecs.of(teacher)
    x = torch.zeros(2, 1, 8, 8)
    shapes = [tuple(tuple(f.shape[1:]) for f in forward_outputs(mdl, x, {"stages"}, sp).stages)
              for mdl, sp in ((student, s_specs), (teacher, t_specs))]
    pair = PairContext(shapes[0], shapes[1], 40, 96, 10, 24, epochs, 3)
    method = get_method(key)(pair, **hp)
    logs = []
    cfg = SimpleNamespace(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=8, augment=False, seed=0)
    ctx = RunContext(cfg, _Data(), torch.device("cpu"), student, teacher, None, 3, epochs, log=logs.append)
    return ctx, student, teacher, method, s_specs, t_specs, logs


def test_init_epochs_is_the_share_of_the_run_rounded_up():
    assert get_method("ab")(ctx_for(epochs=240)).init_epochs() == 30
    assert get_method("ab")(ctx_for(epochs=1)).init_epochs() == 1
    assert get_method("ft")(ctx_for(epochs=30)).init_epochs() == 4
    assert get_method("ab")(ctx_for(epochs=240), init_fraction=0.0).init_epochs() == 0
    assert get_method("kd")(ctx_for()).init_epochs() == 0


def test_ab_init_stage_trains_the_connectors_and_feature_layers_not_the_classifier():
    ctx, student, teacher, m, s_specs, t_specs, logs = _init_setup("ab", epochs=16)   # 2 init epochs
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    conn_before = [p.detach().clone() for p in m.connectors.parameters()]
    t_before = [p.detach().clone() for p in teacher.parameters()]
    assert {id(p) for p in feature_parameters(student)} == {id(p) for n, p in student.named_parameters()
                                                            if not n.startswith("fc.")}
    run_init_stages(ctx, student, teacher, [m], s_specs, t_specs)
    assert bool(m.init_done) and len([line for line in logs if "init epoch" in line]) == 2
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not any(n.startswith("fc.") for n in changed) and any(n.startswith("stage") for n in changed)
    assert any(not torch.equal(p, q) for p, q in zip(m.connectors.parameters(), conn_before))
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), t_before))
    assert all(p.grad is None for p in student.parameters()) and student.training
    snap = [p.detach().clone() for p in student.parameters()]
    run_init_stages(ctx, student, teacher, [m], s_specs, t_specs)        # done: a resumed run skips it
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), snap))


def test_ab_init_stage_lowers_its_loss():
    ctx, student, teacher, m, s_specs, t_specs, logs = _init_setup("ab", epochs=80)   # 10 init epochs
    x = ctx.dataset.x

    def loss():
        with torch.no_grad():
            student.eval()
            m.eval()
            needs = {"preact"}
            value = m.boundary_loss(forward_outputs(student, x, needs, s_specs),
                                    forward_outputs(teacher, x, needs, t_specs))
            student.train()
            m.train()
            return value.item()

    first = loss()
    run_init_stages(ctx, student, teacher, [m], s_specs, t_specs)
    assert loss() < 0.9 * first
    means = [float(line.rsplit(" ", 1)[1]) for line in logs if "init epoch" in line]
    assert len(means) == 10 and means[-1] < 0.8 * means[0]


def test_ft_init_stage_trains_only_the_paraphraser_and_leaves_it_frozen():
    ctx, student, teacher, m, s_specs, t_specs, logs = _init_setup("ft", epochs=16)
    before = {n: p.detach().clone() for n, p in student.state_dict().items()}   # BN statistics included
    para = [p.detach().clone() for p in m.paraphraser.parameters()]

    def rec():
        return m.init_loss(None, forward_outputs(teacher, ctx.dataset.x, {"stages"}, t_specs), None)["ft_init"]

    first = rec().item()
    run_init_stages(ctx, student, teacher, [m], s_specs, t_specs)
    assert all(torch.equal(v, before[n]) for n, v in student.state_dict().items())   # eval mode, untouched
    assert any(not torch.equal(p, q) for p, q in zip(m.paraphraser.parameters(), para))
    assert not any(p.requires_grad for p in m.paraphraser.parameters()) and rec().item() < first
    assert any("ft: init stage" in line for line in logs)


def test_no_init_stage_when_its_share_is_zero():
    ctx, student, teacher, m, s_specs, t_specs, logs = _init_setup("ab", init_fraction=0.0)
    snap = [p.detach().clone() for p in student.parameters()]
    run_init_stages(ctx, student, teacher, [m], s_specs, t_specs)
    assert bool(m.init_done) and not logs and all(torch.equal(p, q) for p, q in zip(student.parameters(), snap))
