"""MiniLLM's policy-gradient loss (explorer/schemes/minillm.py) equals a hand computation of the official form
(microsoft/LMOps minillm: sampler.py's rewards and importance weights, losses.py's length-normalised returns,
whitening, clipped PPO objective and single-step reverse KL), written here with plain Python floats; and the
teacher-mixed sampling of GPT.generate reduces to each model's own sampling at alpha = 0 and 1."""
import math
import statistics

import pytest
import torch

from explorer.errors import ConfigError
from explorer.models import create_model
from explorer.models.sequence import build_args
from explorer.recipes import resolve
from explorer.schemes.minillm import length_normalised_returns, minillm_terms

ALPHA, GAMMA, SCALING, CLIP = 0.5, 0.9, 0.5, 0.2


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def hand_minillm(s, t, tokens):
    """The official formulas, one token at a time: (pg, single_step, per-token d pg / d log p_s(y_t), #clipped)."""
    b, n = len(tokens), len(tokens[0])
    ps = [[softmax(s[i][j]) for j in range(n)] for i in range(b)]
    pt = [[softmax(t[i][j]) for j in range(n)] for i in range(b)]
    logp = [[math.log(ps[i][j][tokens[i][j]]) for j in range(n)] for i in range(b)]
    logq = [[math.log(pt[i][j][tokens[i][j]]) for j in range(n)] for i in range(b)]
    # importance weight of the teacher-mixed sampling: p_s / ((1 - alpha) p_s + alpha p_t), per token
    w = [[math.exp(logp[i][j]) / ((1 - ALPHA) * math.exp(logp[i][j]) + ALPHA * math.exp(logq[i][j]))
          for j in range(n)] for i in range(b)]
    r = [[(logq[i][j] - logp[i][j]) / SCALING for j in range(n)] for i in range(b)]   # |r| < 100: no reward clip
    # R_t = sum_{k >= t} gamma^(k - t) r_k, divided by the n - t tokens from t on
    ret = [[sum(GAMMA ** (k - j) * r[i][k] for k in range(j, n)) / (n - j) for j in range(n)] for i in range(b)]
    flat = [v for row in ret for v in row]
    mean, var = statistics.fmean(flat), statistics.variance(flat)   # unbiased, as their whiten()
    adv = [[(v - mean) / math.sqrt(var + 1e-8) for v in row] for row in ret]
    pg, grad, clipped = 0.0, [[0.0] * n for _ in range(b)], 0
    for i in range(b):
        for j in range(n):
            a, ratio = adv[i][j], w[i][j]   # one policy step: the ratio p_s / p_s_old is 1, leaving w
            kept = min(max(ratio, 1 - CLIP), 1 + CLIP)
            pg += max(-a * ratio, -a * kept) / (b * n)
            if -a * ratio >= -a * kept:   # the unclipped branch carries the gradient: -A w d log p_s
                grad[i][j] = -a * ratio / (b * n)
            clipped += kept != ratio
    rkl = [sum(p * math.log(p / q) for p, q in zip(ps[i][j], pt[i][j])) for i in range(b) for j in range(n)]
    return pg, statistics.fmean(rkl), grad, clipped


def test_length_normalised_returns_by_hand():
    # gamma 0.5: R = (1 + 0.5*2 + 0.25*3, 2 + 0.5*3, 3) = (2.75, 3.5, 3), over 3, 2, 1 tokens left
    got = length_normalised_returns(torch.tensor([[1.0, 2.0, 3.0]]), 0.5)
    assert got[0].tolist() == pytest.approx([2.75 / 3, 3.5 / 2, 3.0])


def test_minillm_loss_equals_the_hand_computation():
    g = torch.Generator().manual_seed(0)
    b, n, v = 2, 4, 5
    s = (3 * torch.randn(b, n, v, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = 3 * torch.randn(b, n, v, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, v, (b, n), generator=g)
    pg, single, grad, clipped = hand_minillm(s.tolist(), t.tolist(), tokens.tolist())
    assert clipped >= 2   # the case exercises the PPO clip of the importance weight
    terms, stats = minillm_terms(s, t, tokens, ALPHA, GAMMA, SCALING, CLIP)
    assert terms["pg"].item() == pytest.approx(pg, rel=1e-6)
    assert terms["single_step"].item() == pytest.approx(single, rel=1e-6)
    assert stats["rev_kl"].item() == pytest.approx(single, rel=1e-6)
    # d pg / d z = sum_t c_t d log p_s(y_t) / d z, and d log p_s(y) / d z_k = [k = y] - p_s(k)
    terms["pg"].backward()
    p = s.detach().softmax(-1)
    expected = torch.tensor(grad, dtype=torch.float64)[..., None] * (
        torch.nn.functional.one_hot(tokens, v).double() - p)
    assert torch.allclose(s.grad, expected, atol=1e-9)


def test_mixed_sampling_reduces_to_each_models_own_at_alpha_0_and_1():
    torch.manual_seed(0)
    student = create_model("gpt_1x32", **build_args((12,), 30))
    teacher = create_model("gpt_2x64", **build_args((12,), 30))
    prompt = torch.randint(0, 30, (3, 4))
    g = lambda: torch.Generator().manual_seed(5)   # noqa: E731
    for alpha, own in ((0.0, student), (1.0, teacher)):
        mixed = student.generate(prompt, 14, 1.0, g(), mix_in=teacher, mix_in_alpha=alpha)   # crosses the context
        assert torch.equal(mixed, own.generate(prompt, 14, 1.0, g()))
    half = student.generate(prompt, 14, 1.0, g(), mix_in=teacher, mix_in_alpha=0.5)
    assert not torch.equal(half, student.generate(prompt, 14, 1.0, g()))
    with pytest.raises(ValueError, match="temperature > 0"):
        student.generate(prompt, 2, 0.0, mix_in=teacher, mix_in_alpha=0.5)


@pytest.mark.parametrize("config, field", [
    ({"dataset": "digits", "scheme": "minillm"}, "scheme"),
    ({"dataset": "pydoc", "scheme": "minillm", "scheme_params": {"prompt": 64}}, "scheme_params.prompt"),
    ({"dataset": "pydoc", "scheme": "minillm", "scheme_params": {"alpha": 1.5}}, "scheme_params.alpha"),
])
def test_minillm_refuses_what_it_cannot_run(config, field):
    with pytest.raises(ConfigError) as e:
        resolve(config)
    assert e.value.field == field
