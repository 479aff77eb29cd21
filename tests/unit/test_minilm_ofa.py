"""MiniLM (attention + value-relation transfer) and OFA-KD (logit-space branches): hand computations, identities,
gradients, the pair checks' messages, and short runs of each through the engine on digits."""
import math
from types import SimpleNamespace

import pytest
import torch

from explorer.kd import Batch, Outputs, PairContext, get_method
from explorer.kd.minilm import attention_kl, value_relation_kl
from explorer.kd.ofa import SepConv, TokenBranch, ofa_loss
from explorer.models import create_model
from explorer.models.outputs import TapSpecs, forward_outputs

B, K = 4, 5
S_STAGES = ((8, 8, 8), (8, 8, 8), (16, 4, 4), (32, 2, 2))     # stem, then 8x8 -> 4x4 -> 2x2
T_STAGES = ((16, 8, 8), (16, 8, 8), (32, 4, 4), (64, 2, 2))


def ctx_of(s=S_STAGES, t=T_STAGES, pairs=None):
    return PairContext(s, t, s[-1][0], t[-1][0], K, 100, 4, 10, pairs)


def batch(y=None):
    y = torch.arange(B) % K if y is None else y
    return Batch(x=torch.zeros(len(y), 1, 8, 8), y=y, index=torch.arange(len(y)))


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# ------------------------------------------------------------------------------------------------ OFA
def test_ofa_loss_equals_the_official_formula_by_hand():
    zs = [[1.0, -0.5, 0.3], [0.2, 0.9, -1.1]]
    zt = [[2.0, 0.1, -0.4], [-0.3, 0.5, 1.2]]
    y, eps, temp = [0, 2], 1.5, 2.0
    want = 0.0
    for i in range(2):
        ps, pt = softmax([v / temp for v in zs[i]]), softmax([v / temp for v in zt[i]])
        for c in range(3):
            hot = 1.0 if c == y[i] else 0.0
            want += -((pt[c] + hot) ** eps - hot) * math.log(ps[c]) / 2
    got = ofa_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), eps, temp)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # eps = 1: the target weight is p_t itself, so the loss is the cross-entropy with the teacher's soft labels
    soft_ce = -(torch.softmax(torch.tensor(zt), 1) * torch.log_softmax(torch.tensor(zs), 1)).sum(1).mean()
    assert ofa_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), 1.0).item() == pytest.approx(soft_ce.item())


def test_ofa_terms_are_the_final_logits_and_every_branch_and_reach_the_student():
    torch.manual_seed(0)
    m = get_method("ofa")(ctx_of(), eps=1.3, branch_weight=0.7)
    assert m.stages == [1, 2, 3]                        # every student stage after the stem
    # SepConvs: as many as halvings down to the last stage (8x8 -> 2x2: 2, 4x4: 1), else a 1x1 conv
    assert [sum(isinstance(x, SepConv) for x in b) for b in m.branches] == [2, 1, 0]
    assert isinstance(m.branches[2][0], torch.nn.Conv2d) and m.branches[0][-1].in_features == 64   # max(32, 64)
    s = Outputs(torch.randn(B, K, requires_grad=True), [torch.randn(B, *sh, requires_grad=True) for sh in S_STAGES])
    t = Outputs(torch.randn(B, K, requires_grad=True))
    m.eval()   # BatchNorm on running statistics, so calling the branches again gives the same logits
    terms = m(s, t, batch())
    assert set(terms) == {"ofa_logits", "ofa_branches"}
    assert terms["ofa_logits"].item() == pytest.approx(ofa_loss(s.logits, t.logits, batch().y, 1.3).item())
    by_hand = sum(ofa_loss(b(s.stages[i]), t.logits, batch().y, 1.3) for i, b in zip([1, 2, 3], m.branches))
    assert terms["ofa_branches"].item() == pytest.approx(0.7 * by_hand.item(), rel=1e-5)
    sum(terms.values()).backward()
    assert s.logits.grad is not None and all(s.stages[i].grad.abs().sum() > 0 for i in (1, 2, 3))
    assert s.stages[0].grad is None and t.logits.grad is None            # stem unused; the teacher detached


def test_ofa_branch_design_follows_the_student_and_explicit_pairs():
    m = get_method("ofa")(ctx_of(pairs=((3, 3), (2, 1), (2, 2))))
    assert m.stages == [2, 3]                            # the explicit pairs' student stages, once each
    vit = create_model("vit_tiny_p2", num_classes=K, in_channels=1, image_size=8)
    m = get_method("ofa")(ctx_of())
    m.attach_student(create_model("cnn_small", num_classes=K, in_channels=1, image_size=8))
    assert not any(isinstance(b, TokenBranch) for b in m.branches)     # a CNN keeps the conv branches
    m.attach_student(vit)                                                # branch=auto: a ViT gets transformer ones
    assert all(isinstance(b, TokenBranch) for b in m.branches)
    assert [len(b.blocks) for b in m.branches] == [2, 1, 1]              # official 4 - stage, at least 1
    conv = get_method("ofa")(ctx_of(), branch="conv")
    conv.attach_student(vit)
    assert not any(isinstance(b, TokenBranch) for b in conv.branches)
    with pytest.raises(ValueError, match="out of range"):
        get_method("ofa").check_pair(ctx_of(pairs=((7, 1),)))
    with pytest.raises(ValueError, match=r"not \(C, H, W\)"):
        get_method("ofa").check_pair(ctx_of(s=((8,), (16,))))


# ------------------------------------------------------------------------------------------------ MiniLM
def _probs(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g) * 2, -1)


def test_minilm_losses_equal_the_paper_by_hand():
    heads, n = 2, 3
    a_s, a_t = _probs(B, heads, n, n, seed=1), _probs(B, heads, n, n, seed=2)
    v_s = torch.randn(B, heads, n, 4, generator=torch.Generator().manual_seed(3))    # head widths differ
    v_t = torch.randn(B, heads, n, 8, generator=torch.Generator().manual_seed(4))

    def mean_row_kl(pt, ps):   # 1/(A_h |x|) sum over heads and query tokens of KL(teacher || student) rows
        total = sum(pt[b][a][i][j] * math.log(pt[b][a][i][j] / ps[b][a][i][j])
                    for b in range(B) for a in range(heads) for i in range(n) for j in range(n))
        return total / (B * heads * n)

    def relations(v):
        d = len(v[0][0][0])
        return [[[softmax([sum(x * z for x, z in zip(v[b][a][i], v[b][a][j])) / math.sqrt(d) for j in range(n)])
                  for i in range(n)] for a in range(heads)] for b in range(B)]

    assert attention_kl(a_s, a_t).item() == pytest.approx(mean_row_kl(a_t.tolist(), a_s.tolist()), rel=1e-5)
    vr = mean_row_kl(relations(v_t.tolist()), relations(v_s.tolist()))
    assert value_relation_kl(v_s, v_t).item() == pytest.approx(vr, rel=1e-5)
    m = get_method("minilm")(ctx_of())
    s = Outputs(torch.zeros(B, K), attentions=[_probs(B, heads, n, n, seed=9), a_s], values=[v_s, v_s])
    t = Outputs(torch.zeros(B, K), attentions=[a_t, a_t, a_t], values=[v_t, v_t, v_t])
    terms = m(s, t, batch())                                 # last block to last block
    assert m.pairs == [(1, 2)]
    assert terms["minilm_at"].item() == pytest.approx(attention_kl(a_s, a_t).item())
    assert terms["minilm_vr"].item() == pytest.approx(vr, rel=1e-5)
    assert set(get_method("minilm")(ctx_of(), value_relation=False)(s, t, batch())) == {"minilm_at"}


def test_minilm_is_zero_for_a_copy_and_its_gradient_reaches_the_student():
    torch.manual_seed(0)
    student = create_model("vit_tiny_p2", num_classes=K, in_channels=1, image_size=8)
    teacher = create_model("vit_tiny_p2", num_classes=K, in_channels=1, image_size=8)
    teacher.load_state_dict(student.state_dict())
    m = get_method("minilm")(ctx_of())
    x = torch.randn(B, 1, 8, 8)
    s = forward_outputs(student, x, m.needs, TapSpecs.of(student))
    with torch.no_grad():
        t = forward_outputs(teacher, x, m.needs, TapSpecs.of(teacher))
    assert s.attentions[-1].shape == (B, 2, 17, 17) and s.values[-1].shape == (B, 2, 17, 16)
    terms = m(s, t, batch())
    assert all(abs(v.item()) < 1e-6 for v in terms.values()), terms
    for p in teacher.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    with torch.no_grad():
        t = forward_outputs(teacher, x, m.needs, TapSpecs.of(teacher))
    terms = m(s, t, batch())
    assert all(v.item() > 1e-4 for v in terms.values()), terms
    sum(terms.values()).backward()
    qkv = student.blocks[-1].attn.qkv.weight.grad
    assert qkv is not None and qkv.abs().sum() > 0 and student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_minilm_pairs_blocks_by_the_one_rule_and_refuses_unlike_pairs_clearly():
    cls = get_method("minilm")

    def att(heads, n, blocks):   # (heads, N, N) per block
        return [(heads, n, n)] * blocks

    assert cls.block_pairs(att(2, 5, 2), att(2, 5, 4), "paired") == [(0, 1), (1, 3)]   # nearest relative depth
    assert cls.block_pairs(att(2, 5, 2), att(2, 5, 4)) == [(1, 3)]
    with pytest.raises(ValueError, match="2 attention heads and the teacher 4"):
        cls.block_pairs(att(2, 5, 2), att(4, 5, 2))
    with pytest.raises(ValueError, match="17 tokens and the teacher's 65"):
        cls.block_pairs(att(2, 17, 2), att(2, 65, 2))
    with pytest.raises(ValueError, match="student has no attention taps"):
        cls.block_pairs([], att(2, 5, 2))
    carrying = SimpleNamespace(student_attention=att(2, 5, 2), teacher_attention=att(3, 5, 2))
    with pytest.raises(ValueError, match="head counts must be equal"):   # a PairContext that carries the shapes
        cls.check_pair(carrying)
    m = cls(ctx_of())
    s = Outputs(torch.zeros(B, K), attentions=[_probs(B, 2, 5, 5)], values=[torch.randn(B, 2, 5, 4)])
    t = Outputs(torch.zeros(B, K), attentions=[_probs(B, 4, 5, 5)], values=[torch.randn(B, 4, 5, 4)])
    with pytest.raises(ValueError, match="head counts must be equal"):   # else at the first step
        m(s, t, batch())
    cnn = create_model("cnn_small", num_classes=K, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="kd_attention"):
        forward_outputs(cnn, torch.zeros(1, 1, 8, 8), cls.needs, TapSpecs.of(cnn))


# ------------------------------------------------------------------------------------------------ engine
def _terms(result):
    from explorer.store import Store
    assert result["status"] == "completed"
    return {n[6:] for n in Store().metrics_df(result["run_id"])["name"] if n.startswith("train/")}


def test_ofa_and_minilm_train_through_the_engine_on_digits():
    from explorer.config import RunConfig
    from explorer.engine import run
    # CNN -> CNN runs in tests/e2e/test_methods_e2e.py (every method on the digits and CIFAR pairs)
    tiny = dict(dataset="digits", n_train=32, epochs=1, teacher_epochs=1, batch_size=32, probe_size=0)
    cnn_to_vit = run(RunConfig(methods=["ofa"], student="vit_tiny_p2", **tiny))
    assert {"ce", "ofa_logits", "ofa_branches"} <= _terms(cnn_to_vit)
    # a ViT teacher trained here (one epoch): MiniLM ViT -> ViT (equal heads and tokens), then OFA ViT -> CNN
    vit = dict(tiny, teacher="vit_tiny_p2")
    assert {"ce", "minilm_at", "minilm_vr"} <= _terms(run(RunConfig(methods=["minilm"], student="vit_tiny_p2", **vit)))
    assert {"ofa_logits", "ofa_branches"} <= _terms(run(RunConfig(methods=["ofa"], student="cnn_tiny", **vit)))


@pytest.mark.skipif("student_attention" not in PairContext.__dataclass_fields__,
                    reason="PairContext does not carry attention shapes yet (the shared patch minilm_shared.patch)")
def test_minilm_unlike_pairs_are_refused_before_the_run():
    from explorer.config import ConfigError
    from explorer.recipes import resolve
    with pytest.raises(ConfigError, match="student has no attention taps") as e:
        resolve(dict(dataset="digits", methods=["minilm"], student="cnn_tiny", teacher="cnn_small"))
    assert e.value.field == "methods[0]"
    with pytest.raises(ConfigError, match="2 attention heads and the teacher 4"):
        resolve(dict(dataset="digits", methods=["minilm"], student="vit_tiny_p2", teacher="vit_small_p2"))
    assert resolve(dict(dataset="digits", methods=["minilm"], student="vit_tiny_p2", teacher="vit_tiny_p2")).resolved
