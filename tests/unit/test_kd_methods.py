"""Every registered method: construction from a PairContext, gradients (student and method
modules yes, teacher never), zero-when-identical, paper-specific behaviour; plus pairing."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.kd import Batch, Outputs, PairContext, get_method, list_methods
from explorer.kd.pairing import Connector, match_spatial, pair_stages, teacher_stage_for

B, K, N_TRAIN = 8, 10, 100
S_STAGES = ((16, 8, 8), (16, 8, 8), (32, 4, 4), (64, 2, 2))       # stem, stage1..3
T_STAGES = ((32, 8, 8), (32, 8, 8), (64, 4, 4), (128, 2, 2))
FSP_T_STAGES = ((16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4))   # same widths, twice the resolution
ALL = "kd dkd dist ctkd fitnet at nst fsp vid ofd reviewkd simkd rkd sp cc pkt irg crd".split()
ZERO_WHEN_IDENTICAL = "kd dkd dist at nst fsp fitnet sp rkd pkt irg".split()


def make_ctx(s=S_STAGES, t=T_STAGES, pairs=None, s_emb=None, t_emb=None):
    return PairContext(student_stages=s, teacher_stages=t, student_embedding=s_emb or s[-1][0],
                       teacher_embedding=t_emb or t[-1][0], num_classes=K, n_train=N_TRAIN, epochs=10,
                       steps_per_epoch=10, pairs=pairs)


def make_outputs(stages, emb_dim, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    leaf = lambda x: x.requires_grad_(grad)  # noqa: E731
    return Outputs(
        logits=leaf(torch.randn(B, K, generator=g)),
        stages=[leaf(torch.randn(B, *sh, generator=g).relu()) for sh in stages],
        preact=[leaf(torch.randn(B, *sh, generator=g)) for sh in stages],
        embedding=leaf(torch.randn(B, emb_dim, generator=g).relu()))


def make_batch(progress=0.5, index=None):
    return Batch(x=torch.zeros(B, 3, 8, 8), y=torch.arange(B) % K,
                 index=torch.arange(B) * 3 if index is None else index, progress=progress)


class TinyTeacher(nn.Module):
    def __init__(self, d, k=K):
        super().__init__()
        self.body = nn.Conv2d(3, d, 1)
        self.fc = nn.Linear(d, k)


def build(key, ctx):
    m = get_method(key)(ctx)
    if hasattr(m, "attach_teacher"):
        m.attach_teacher(TinyTeacher(ctx.teacher_embedding))
    return m


def _leaves(o: Outputs):
    return [o.logits, o.embedding, *o.stages, *o.preact]


def test_registry_complete_and_described():
    assert set(ALL) <= set(list_methods())
    for key in ALL:
        cls = get_method(key)
        d = cls.describe()
        json.dumps(d)
        assert cls.category in {"response", "feature", "relation"}
        assert cls.paper.title and cls.paper.authors and cls.paper.year > 2000 and cls.equation
        assert cls.needs <= {"logits", "stages", "preact", "embedding"}
        for h in cls.hparams:
            assert h.help and (h.low is None or h.low <= h.default <= h.high)


@pytest.mark.parametrize("key", ALL)
def test_gradients_reach_student_and_method_never_teacher(key):
    torch.manual_seed(0)
    t_stages = FSP_T_STAGES if key == "fsp" else T_STAGES    # FSP needs equal widths
    ctx = make_ctx(S_STAGES, t_stages)
    m = build(key, ctx)
    s = make_outputs(S_STAGES, ctx.student_embedding, seed=1)
    t = make_outputs(t_stages, ctx.teacher_embedding, seed=2)   # requires grad: the method must detach
    terms = m(s, t, make_batch(progress=0.5))
    assert terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values()), terms
    sum(terms.values()).backward()
    used = [x for x in _leaves(s) if x.grad is not None]
    assert used, "no gradient reached the student"
    assert all(torch.isfinite(x.grad).all() for x in used)
    assert any(x.grad.abs().sum() > 0 for x in used)
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(x.grad is None for x in _leaves(t)), "teacher tensors received gradient"


@pytest.mark.parametrize("key", ZERO_WHEN_IDENTICAL)
def test_zero_when_student_equals_teacher(key):
    ctx = make_ctx(S_STAGES, S_STAGES)
    m = build(key, ctx)
    s = make_outputs(S_STAGES, ctx.student_embedding, seed=3)
    t = Outputs(s.logits.detach().clone(), [x.detach().clone() for x in s.stages],
                [x.detach().clone() for x in s.preact], s.embedding.detach().clone())
    terms = m(s, t, make_batch(progress=1.0))
    # DIST: Pearson's eps (1e-8) on near-flat softmax rows leaves ~1e-4 after the tau^2 = 16 factor
    assert sum(terms.values()).item() == pytest.approx(0.0, abs=1e-3 if key == "dist" else 1e-5)


def test_dkd_warmup_follows_progress():
    ctx = make_ctx()
    m = get_method("dkd")(ctx)
    s, t = make_outputs(S_STAGES, 64, False, 1), make_outputs(T_STAGES, 128, False, 2)
    full = m(s, t, make_batch(progress=0.5))["dkd"]
    assert m(s, t, make_batch(progress=0.0))["dkd"].item() == 0.0
    half = m(s, t, make_batch(progress=0.5 * 20 / 240))["dkd"]
    assert half.item() == pytest.approx(0.5 * full.item(), rel=1e-5)


def test_ctkd_temperature_gradient_is_reversed_by_curriculum():
    # the mechanism at T_0 = 4 and a whole-run curriculum (the defaults are now the official 15.62 and
    # 10/240, pinned in test_official_forms.py)
    m = get_method("ctkd")(make_ctx(), t_init=4.0, curriculum=1.0)
    assert m.temperature().item() == pytest.approx(4.0, rel=1e-5)
    s, t = make_outputs(S_STAGES, 64, True, 1), make_outputs(T_STAGES, 128, False, 2)
    # plain gradient of the loss wrt theta, without the reversal
    T = 1 + 20 * torch.sigmoid(m.theta)
    from explorer.kd.functional import kd_loss
    (g_plain,) = torch.autograd.grad(kd_loss(s.logits, t.logits, T), m.theta)
    for progress, lam in ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)):
        m.zero_grad()
        m(s, t, make_batch(progress=progress))["kd"].backward()
        assert m.theta.grad.item() == pytest.approx(-lam * g_plain.item(), abs=1e-7)


def test_fsp_rejects_unequal_channels_with_names():
    with pytest.raises(ValueError, match=r"student stage 0 has 16 channels vs teacher stage 0 32"):
        get_method("fsp")(make_ctx())


def test_fsp_pools_spatial_mismatch_within_a_network():
    t = FSP_T_STAGES
    m = get_method("fsp")(make_ctx(S_STAGES, t))
    loss = m(make_outputs(S_STAGES, 64, seed=1), make_outputs(t, 64, False, 2), make_batch())["fsp"]
    assert torch.isfinite(loss)


def test_fitnet_uses_the_hint_stage_and_identity_connector_when_equal():
    m = get_method("fitnet")(make_ctx())
    assert m.pairs == [(2, 2)] and not m.regressors[0].identity
    same = get_method("fitnet")(make_ctx(S_STAGES, S_STAGES))
    assert same.regressors[0].identity and not list(same.parameters())


def test_fitnet_hint_on_a_deeper_student_takes_the_teacher_stage_at_the_nearest_depth():
    deep = S_STAGES[:2] + ((32, 4, 4),) * 3 + S_STAGES[3:]               # 6 stages against the teacher's 4
    ctx = make_ctx(deep, T_STAGES)
    assert [teacher_stage_for(i, ctx) for i in range(6)] == [0, 0, 1, 2, 2, 3]   # shallow to deep, deepest meets deepest
    assert get_method("fitnet")(ctx, hint_stage=3).pairs == [(3, 2)]


def test_irg_transformation_between_the_two_deepest_stages():
    m = get_method("irg")(make_ctx())
    assert m.transform == [(2, 2), (3, 3)]
    s, t = make_outputs(S_STAGES, 64, seed=1), make_outputs(T_STAGES, 128, False, 2)
    terms = m(s, t, make_batch())
    assert set(terms) == {"vertex", "edge", "transform"} and terms["transform"].item() > 0
    t.stages[1] = t.stages[1] * 0   # a stage outside the transformation (and the edge pairs) changes nothing
    assert m(s, t, make_batch())["transform"].item() == pytest.approx(terms["transform"].item())
    one_stage = get_method("irg")(make_ctx(S_STAGES[:2], T_STAGES[:2]))
    assert one_stage.transform is None and "transform" not in one_stage(
        make_outputs(S_STAGES[:2], 16, seed=1), make_outputs(T_STAGES[:2], 32, False, 2), make_batch())


def test_reviewkd_reviews_every_stage_and_the_pooled_feature():
    torch.manual_seed(0)
    m = get_method("reviewkd")(make_ctx())
    assert len(m.abfs) == len(m.pairs) + 1 == 4                      # 3 stages after the stem + pooled
    assert [abf.att is not None for abf in m.abfs] == [True, True, True, False]   # the deepest is not fused
    assert m.abfs[-1].conv1[0].in_channels == 64 and m.abfs[-1].conv2[0].out_channels == 128
    s, t = make_outputs(S_STAGES, 64, seed=1), make_outputs(T_STAGES, 128, False, 2)
    base = m(s, t, make_batch(progress=1.0))["reviewkd"].item()
    t.stages = [x * 0 for x in t.stages]      # the targets are the teacher's pre-ReLU maps, not these
    assert m(s, t, make_batch(progress=1.0))["reviewkd"].item() == pytest.approx(base)
    t.embedding = t.embedding * 0             # ...and its pooled feature
    assert m(s, t, make_batch(progress=1.0))["reviewkd"].item() != pytest.approx(base)


def test_ofd_margin_is_estimated_then_frozen():
    m = get_method("ofd")(make_ctx(), margin_batches=1)
    t = make_outputs(T_STAGES, 128, False, 2)
    m(make_outputs(S_STAGES, 64, seed=1), t, make_batch())
    ft = t.preact[1]
    expected = torch.stack([c[c < 0].mean() for c in ft.transpose(0, 1).reshape(ft.size(1), -1)])
    assert torch.allclose(m.margins[0].value(), expected, atol=1e-5)
    m(make_outputs(S_STAGES, 64, seed=1), make_outputs(T_STAGES, 128, False, 5), make_batch())
    assert torch.allclose(m.margins[0].value(), expected, atol=1e-5)   # frozen after 1 batch


def test_simkd_reuses_teacher_head_and_requires_attach():
    ctx = make_ctx()
    m = get_method("simkd")(ctx)
    s, t = make_outputs(S_STAGES, 64, seed=1), make_outputs(T_STAGES, 128, False, 2)
    with pytest.raises(RuntimeError, match="attach_teacher"):
        m(s, t, make_batch())
    teacher = TinyTeacher(128)
    m.attach_teacher(teacher)
    assert torch.equal(m.cls_weight, teacher.fc.weight.detach())
    assert not any(n.startswith("cls") for n, _ in m.named_parameters())
    ps, _ = m.project(s, t.stages[-1])
    assert torch.allclose(m.reused_logits(ps), teacher.fc(ps.mean((2, 3))), atol=1e-6)
    assert set(m(s, t, make_batch())) == {"simkd", "ce_reused"}


def test_crd_banks_update_only_at_batch_index():
    m = get_method("crd")(make_ctx())
    assert m.k == N_TRAIN - 1 and m.memory_s.shape == (N_TRAIN, 128)
    before_s, before_t = m.memory_s.clone(), m.memory_t.clone()
    s, t = make_outputs(S_STAGES, 64, seed=1), make_outputs(T_STAGES, 128, False, 2)
    idx = torch.tensor([5, 17, 42, 0, 99, 63, 7, 8])
    m(s, t, make_batch(index=idx))
    changed = (m.memory_s != before_s).any(1)
    assert set(changed.nonzero().flatten().tolist()) == set(idx.tolist())
    assert set((m.memory_t != before_t).any(1).nonzero().flatten().tolist()) == set(idx.tolist())
    with torch.no_grad():
        f_s = F.normalize(m.embed_s(s.embedding), dim=1)
        expected = F.normalize(0.5 * before_s[idx] + 0.5 * f_s, dim=1)
    assert torch.allclose(m.memory_s[idx], expected, atol=1e-6)
    assert m.z_s.item() > 0 and m.z_t.item() > 0
    rows = m.sample(idx)
    assert rows.shape == (B, N_TRAIN) and (rows[:, 0] == idx).all()
    assert not (rows[:, 1:] == idx.view(-1, 1)).any()
    m.eval()
    snap = m.memory_s.clone()
    m(s, t, make_batch(index=idx))
    assert torch.equal(snap, m.memory_s)   # no bank update outside training


# ------------------------------------------------------------------ pairing

def test_pairing_equal_unequal_and_explicit():
    s3 = ((16, 8, 8), (32, 4, 4), (64, 2, 2))
    t5 = ((32, 8, 8), (32, 8, 8), (64, 4, 4), (128, 2, 2), (256, 1, 1))
    assert pair_stages(S_STAGES, T_STAGES) == [(1, 1), (2, 2), (3, 3)]
    assert pair_stages(S_STAGES, T_STAGES, skip_stem=False) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    # 2 student stages after the stem vs 4 teacher stages: relative depth 1/2 -> 2nd, 1 -> deepest
    assert pair_stages(s3, t5) == [(1, 2), (2, 4)]
    assert pair_stages(t5, s3) == [(2, 1), (4, 2)]
    assert pair_stages(S_STAGES, t5) == [(1, 1), (2, 3), (3, 4)]
    assert pair_stages(S_STAGES, T_STAGES, explicit=[(3, 2)]) == [(3, 2)]
    m = get_method("at")(make_ctx(pairs=((2, 3),)))
    assert m.pairs == [(2, 3)]


def test_impossible_pairings_explain_themselves():
    with pytest.raises(ValueError, match="no student stages"):
        pair_stages((), T_STAGES)
    with pytest.raises(ValueError, match=r"out of range.*0\.\.3"):
        pair_stages(S_STAGES, T_STAGES, explicit=[(4, 0)])
    with pytest.raises(ValueError, match=r"not \(C, H, W\)"):
        pair_stages(((64,),), T_STAGES)
    with pytest.raises(ValueError, match="4-D"):
        match_spatial(torch.rand(2, 8), torch.rand(2, 8, 2, 2))
    with pytest.raises(ValueError, match="no teacher stages"):
        get_method("nst")(make_ctx(t=(), t_emb=128))


def test_match_spatial_pools_larger_and_connector():
    s, t = torch.rand(2, 4, 8, 8), torch.rand(2, 6, 2, 2)
    ps, pt = match_spatial(s, t)
    assert ps.shape == (2, 4, 2, 2) and pt is t
    assert torch.allclose(ps, F.avg_pool2d(s, 4))
    assert Connector(8, 8).identity and not Connector(8, 8, force=True).identity
    assert Connector(4, 6)(s).shape == (2, 6, 8, 8)
