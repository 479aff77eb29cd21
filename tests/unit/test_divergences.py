"""The language-model distillation criteria against hand computations, and the classic lesson they teach:
forward KL covers the teacher's modes, reverse KL picks one."""
import math

import pytest
import torch

from explorer.kd import get_method
from explorer.kd.base import Batch, Outputs, PairContext
from explorer.kd.divergences import forward_kl, generalized_jsd, reverse_kl
from explorer.kd.functional import kd_loss


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


P_T = [0.7, 0.2, 0.1]      # teacher
P_S = [0.2, 0.5, 0.3]      # student


def _logits(p):
    return torch.tensor([[math.log(v) for v in p]], dtype=torch.float64)


def test_forward_and_reverse_kl_equal_the_sums_by_hand():
    assert forward_kl(_logits(P_S), _logits(P_T)).item() == pytest.approx(_kl(P_T, P_S), rel=1e-6)
    assert reverse_kl(_logits(P_S), _logits(P_T)).item() == pytest.approx(_kl(P_S, P_T), rel=1e-6)
    assert _kl(P_T, P_S) != pytest.approx(_kl(P_S, P_T), rel=1e-3)   # the two directions really differ


def test_generalized_jsd_by_hand_at_beta_0_half_and_1():
    zs, zt = _logits(P_S), _logits(P_T)
    m = [0.5 * a + 0.5 * b for a, b in zip(P_T, P_S)]
    jsd_half = 0.5 * _kl(P_T, m) + 0.5 * _kl(P_S, m)
    assert generalized_jsd(zs, zt, 0.5).item() == pytest.approx(jsd_half, rel=1e-6)
    # GKD/TRL convention: the ends are the two KL forms, not the (vanishing) interpolated JSD
    assert generalized_jsd(zs, zt, 0.0).item() == pytest.approx(_kl(P_T, P_S), rel=1e-6)
    assert generalized_jsd(zs, zt, 1.0).item() == pytest.approx(_kl(P_S, P_T), rel=1e-6)
    b = 0.2
    m = [b * a + (1 - b) * c for a, c in zip(P_T, P_S)]
    assert generalized_jsd(zs, zt, b).item() == pytest.approx(b * _kl(P_T, m) + (1 - b) * _kl(P_S, m), rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(zs, zt, 1.5)


def test_criteria_average_over_every_position_of_sequence_logits():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    per_row = torch.stack([forward_kl(zs[i, j:j + 1], zt[i, j:j + 1]) for i in range(2) for j in range(5)])
    assert forward_kl(zs, zt).item() == pytest.approx(per_row.mean().item(), rel=1e-5)
    # forward KL at T = 1 is Hinton's KD at T = 1 (T^2 = 1): word-level KD is the kd method at temperature 1
    assert forward_kl(zs.view(-1, 7), zt.view(-1, 7)).item() == pytest.approx(
        kd_loss(zs.view(-1, 7), zt.view(-1, 7), 1.0).item(), rel=1e-5)


def test_methods_wrap_the_criteria_and_are_zero_at_identity():
    ctx = PairContext(((8, 4, 4),), ((8, 4, 4),), 8, 8, 10, 100, 10, 10)
    z = torch.randn(4, 10)
    batch = Batch(z, torch.zeros(4, dtype=torch.long), torch.arange(4))
    for key, term in (("rkl", "rkl"), ("gkd", "gkd")):
        method = get_method(key)(ctx)
        assert method(Outputs(z.clone()), Outputs(z.clone()), batch)[term].item() == pytest.approx(0.0, abs=1e-6)
        zs = torch.randn(4, 10, requires_grad=True)
        loss = method(Outputs(zs), Outputs(z), batch)[term]
        loss.backward()
        assert loss.item() > 0 and zs.grad.abs().sum() > 0


def _fit(criterion, steps=400):
    """Fit a one-Gaussian student over 61 bins to a two-mode teacher by gradient descent on `criterion`."""
    x = torch.linspace(-6, 6, 61, dtype=torch.float64)
    teacher = torch.logaddexp(-(x + 3) ** 2 / 0.5, -(x - 3) ** 2 / 0.5)   # modes at -3 and +3
    # started right of the middle, about as wide as the gap: reverse KL has a second, spread-out stationary point
    # that a start much wider than the modes' distance falls into (the textbook picture assumes a start near one)
    mu = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        student = -(x - mu) ** 2 / (2 * torch.exp(2 * log_sigma))
        loss = criterion(student.unsqueeze(0), teacher.unsqueeze(0))
        loss.backward()
        opt.step()
    p = torch.softmax(student.detach(), -1)
    entropy = float(-(p * p.clamp_min(1e-300).log()).sum())
    return p, x, entropy


def test_forward_kl_covers_both_modes_and_reverse_kl_picks_one():
    p_fwd, x, h_fwd = _fit(forward_kl)
    p_rev, _, h_rev = _fit(reverse_kl)
    left, right = x < 0, x > 0
    # forward KL: mass on both sides (mode covering), reverse KL: nearly all of it on one mode (mode seeking)
    assert min(p_fwd[left].sum(), p_fwd[right].sum()) > 0.3
    assert max(p_rev[left].sum(), p_rev[right].sum()) > 0.95
    assert h_fwd > h_rev + 0.5
    assert abs(float((p_rev * x).sum()) - 3.0) < 0.05        # on the nearer mode, at +3
    # JSD(0.5) with the same start spreads like forward KL here: it is mode covering too unless beta -> 1
    _, _, h_jsd = _fit(lambda s, t: generalized_jsd(s, t, 0.5))
    assert h_jsd > h_rev + 0.5
