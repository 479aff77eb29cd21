"""Each method's default follows its authors' official code: small tensors, expected values worked out
by hand or from the official formula written out here independently (never by calling our function
twice). Every test names the official file (and function) it pins."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import RunConfig
from explorer.data import load_dataset
from explorer.kd import Batch, Outputs, PairContext, get_method
from explorer.kd import functional as KF
from explorer.models import create_model
from explorer.recipes import resolve
from explorer.schemes import RunContext, get_scheme
from explorer.schemes.common import freeze


def scheme_ctx(key, student=None, epochs=2, **cfg):
    """A RunContext on the digits set with untrained frozen models (what is under test is the loss, not training)."""
    config = resolve(RunConfig(dataset="digits", n_train=120, student="cnn_tiny", teacher="cnn_small", scheme=key,
                               epochs=epochs, **cfg))
    data = load_dataset("digits", n_train=120)
    c, h, _ = data.shape
    make = lambda arch: create_model(arch, data.num_classes, c, h)  # noqa: E731
    torch.manual_seed(0)
    teacher = freeze(make("cnn_small")) if get_scheme(key).needs_teacher else None
    return RunContext(config, data, torch.device("cpu"), student if student is not None else make("cnn_tiny"),
                      teacher, make, data.steps_per_epoch(config.batch_size), config.epochs,
                      load_teacher=lambda arch: freeze(make(arch)))


def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def kl_row(p, log_q):
    """sum_c p_c (ln p_c - log_q_c), plain floats."""
    return sum(pc * (math.log(pc) - lq) for pc, lq in zip(p, log_q))


# ----------------------------------------------------------------------------- TF-KD (virtual teacher)

Z = [[1.0, -0.5, 2.0, 0.3], [0.0, 0.7, -1.2, 0.4], [2.5, 0.1, 0.2, -0.8]]
Y = [0, 2, 3]


def _tfkd_expected(a, T, soften_student, reduce_classes):
    """Teacher-free-Knowledge-Distillation, my_loss_function.py `loss_kd_regularization`, by hand:
    teacher_soft = a on the label, (1-a)/(K-1) elsewhere; KLDivLoss()(log_softmax(outputs), softmax(teacher_soft/T))."""
    k, total = len(Z[0]), 0.0
    for row, y in zip(Z, Y):
        soft = [a if c == y else (1 - a) / (k - 1) for c in range(k)]
        q = [math.exp(v) for v in log_softmax_row([s / T for s in soft])]
        total += kl_row(q, log_softmax_row([v / T for v in row] if soften_student else row))
    return total / (len(Z) * (k if reduce_classes else 1))


def test_tfkd_virtual_follows_official_loss_kd_regularization():
    """Teacher-free-Knowledge-Distillation my_loss_function.py `loss_kd_regularization`: raw student
    log-softmax, nn.KLDivLoss() element mean over batch x classes, x multiplier, correct_prob 0.99."""
    tfkd = get_scheme("tfkd")(scheme_ctx("tfkd", student=nn.Identity()))   # the batch's x are the logits
    assert tfkd.hp["correct_prob"] == 0.99 and tfkd.hp["form"] == "official"
    batch = Batch(torch.tensor(Z, dtype=torch.float64), torch.tensor(Y), torch.arange(3))
    _, losses = tfkd.train_step(batch)
    alpha, mult, T = 0.1, 100.0, 20.0            # the virtual variant's defaults (official resnet18 params.json)
    expected = alpha * mult * _tfkd_expected(0.99, T, soften_student=False, reduce_classes=True)
    assert losses["tfkd"].item() == pytest.approx(expected, rel=1e-9)
    ce = sum(-log_softmax_row(row)[y] for row, y in zip(Z, Y)) / 3
    assert losses["ce"].item() == pytest.approx((1 - alpha) * ce, rel=1e-9)
    # form=paper, a=0.9: the student softened at T too and a batch mean (this scheme's earlier form)
    paper = get_scheme("tfkd")(scheme_ctx("tfkd", student=nn.Identity()), form="paper", correct_prob=0.9)
    _, losses = paper.train_step(Batch(torch.tensor(Z, dtype=torch.float64), torch.tensor(Y), torch.arange(3)))
    assert losses["tfkd"].item() == pytest.approx(
        alpha * mult * _tfkd_expected(0.9, T, soften_student=True, reduce_classes=False), rel=1e-9)


# ----------------------------------------------------------------------------- DAFL

def test_dafl_entropy_is_log10_and_student_kd_is_t1_without_t2():
    """huawei-noah Data-Efficient-Model-Compression/DAFL/DAFL-train.py: loss_information_entropy =
    (p_mean * torch.log10(p_mean)).sum(); kdloss = kl_div(log_softmax(y), softmax(t), sum) / batch (T = 1)."""
    dafl = get_scheme("dafl")(scheme_ctx("dafl"))
    assert dafl.hp["temperature"] == 1.0
    dafl.teacher.double(), dafl.student.double()     # untrained nets agree closely: float64 keeps the KL exact
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        t = dafl.teacher(x).double().tolist()
        ent = dafl.generator_losses(x)["g_entropy"].item()
    probs = [[math.exp(v) for v in log_softmax_row(row)] for row in t]
    p_mean = [sum(col) / len(col) for col in zip(*probs)]
    assert ent == pytest.approx(5.0 * sum(p * math.log10(p) for p in p_mean), rel=1e-6)   # ln would be 2.3x
    z, kd = dafl.distill_on(x, Batch(x, torch.zeros(6, dtype=torch.long), torch.arange(6)))
    expected = sum(kl_row(p, log_softmax_row(row)) for p, row in zip(probs, z.detach().double().tolist())) / 6
    assert kd.item() == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- ONE

def test_one_gate_is_linear_bn_relu_softmax_and_kl_ramps_up_as_sigmoid_rampup():
    """ONE_NeurIPS2018 models/cifar/resnet.py (control_v1 -> bn_v1 -> relu -> softmax) and cifar_one.py
    get_current_consistency_weight = utils/ramps.py sigmoid_rampup(epoch, 80) over 300 epochs."""
    one = get_scheme("one")(scheme_ctx("one", epochs=300))
    one.train()
    g = torch.Generator().manual_seed(2)
    h = torch.randn(5, one._h_channels, 2, 2, generator=g)
    logits = [torch.randn(5, 10, generator=g) for _ in range(3)]
    # by hand: pooled feature -> linear -> batch-norm with the batch's (biased) statistics -> relu -> softmax
    f = h.mean((2, 3))
    a = f @ one.gate.fc.weight.detach().t() + one.gate.fc.bias.detach()
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5)
    a = a * one.gate.bn.weight.detach() + one.gate.bn.bias.detach()
    w = torch.softmax(a.clamp_min(0), 1)
    expected = sum(w[:, k:k + 1] * logits[k] for k in range(3))
    torch.testing.assert_close(one.ensemble(logits, h).detach(), expected, rtol=1e-5, atol=1e-6)
    # the ramp: exp(-5 (1 - e/80)^2), e the 0-based epoch (range(start_epoch=0, epochs)), 1 from epoch 80 on
    for e in (0, 1, 40, 79, 80, 250):
        assert one.kl_ramp(e) == pytest.approx(math.exp(-5.0 * (1 - min(e, 80) / 80) ** 2), rel=1e-9)
    x, y, idx = next(one.ctx.dataset.batches("train", 16))
    kl_0 = one.train_step(Batch(x, y, idx, epoch=0))[1]["kl"].item()
    kl_80 = one.train_step(Batch(x, y, idx, epoch=80))[1]["kl"].item()
    assert kl_0 == pytest.approx(math.exp(-5.0) * kl_80, rel=1e-4)


# ----------------------------------------------------------------------------- CTKD

def _pair_ctx():
    s, t = ((16, 8, 8), (16, 8, 8), (32, 4, 4), (64, 2, 2)), ((32, 8, 8), (32, 8, 8), (64, 4, 4), (128, 2, 2))
    return PairContext(student_stages=s, teacher_stages=t, student_embedding=64, teacher_embedding=128,
                       num_classes=10, n_train=100, epochs=240, steps_per_epoch=10)


def test_ctkd_defaults_are_the_official_global_t_and_cosine_curriculum():
    """zhengli97/CTKD models/temp_global.py Global_T (theta = ones(1); helper/loops.py T = t_start + t_end
    sigmoid(theta), t_start 1, t_end 20) and train_student.py CosineDecay(max 0, min -1, loops 10) as in
    scripts/run_cifar_distill.sh; its GradientReversal multiplies the gradient by that (negative) value."""
    m = get_method("ctkd")(_pair_ctx())
    assert m.theta.item() == pytest.approx(1.0, abs=1e-6)
    assert m.temperature().item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)   # ~15.62
    for epoch in range(0, 13):
        i = min(epoch, 10)
        decay = (math.cos(i * math.pi / 10) + 1.0) * 0.5 * (0 - (-1)) + (-1)    # official CosineDecay.get_value
        assert m.lam(epoch / 240) == pytest.approx(-decay, abs=1e-12)


# ----------------------------------------------------------------------------- CA-MKD

def test_camkd_divides_the_confidence_weighted_kl_by_the_number_of_teachers():
    """Rorozhl/CA-MKD helper/loops.py (ensemble_method CAMKD): attention = (1 - softmax_k(CE_k)) / (K-1);
    loss_div = (attention * KL_per_sample x T^2).sum() / (bsz * teacher_num) (distiller_zoo/KD.py is_ca)."""
    camkd = get_scheme("camkd")(scheme_ctx("camkd"), teachers="cnn_small,cnn_tiny")
    z = [[0.5, -0.2, 1.0], [1.5, 0.0, -1.0]]
    t = [[[2.0, 0.0, -1.0], [0.1, 0.3, 0.2]], [[-0.5, 1.0, 0.5], [1.0, -1.0, 2.0]]]     # (K=2, B=2, C=3)
    y = [0, 2]
    T, k, b = 4.0, 2, 2
    total = 0.0
    for i in range(b):
        ce = [-log_softmax_row(t[j][i])[y[i]] for j in range(k)]
        sm = [math.exp(v) for v in log_softmax_row(ce)]
        for j in range(k):
            p = [math.exp(v) for v in log_softmax_row([v / T for v in t[j][i]])]
            total += (1 - sm[j]) / (k - 1) * kl_row(p, log_softmax_row([v / T for v in z[i]])) * T ** 2
    args = torch.tensor(z), torch.tensor(t), torch.tensor(y)
    assert camkd.distill(*args).item() == pytest.approx(total / (b * k), rel=1e-5)
    paper = get_scheme("camkd")(scheme_ctx("camkd"), teachers="cnn_small,cnn_tiny", form="paper")
    assert paper.distill(*args).item() == pytest.approx(total / b, rel=1e-5)


# ----------------------------------------------------------------------------- ReviewKD

def test_reviewkd_abf_hands_on_the_resized_fused_map():
    """mdistiller/distillers/ReviewKD.py ABF.forward: x is interpolated to out_shape *before* it is
    returned as the residual (`y = self.conv2(x); return y, x`)."""
    from explorer.kd.reviewkd import _ABF
    torch.manual_seed(0)
    deep, shallow = _ABF(4, 3, 5, fuse=False).eval(), _ABF(2, 3, 6, fuse=True).eval()
    s_deep, s_shallow = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 5, 5)
    out_d, res = deep(s_deep, None, (2, 2))          # student 3x3, teacher 2x2
    out_s, _ = shallow(s_shallow, res, (4, 4))       # student 5x5, teacher 4x4
    with torch.no_grad():                            # the official ABF written out with the same weights
        x_d = F.interpolate(deep.conv1(s_deep), size=(2, 2), mode="nearest")
        x_s = shallow.conv1(s_shallow)

        def fused(residual):
            r = F.interpolate(residual, size=(5, 5), mode="nearest")
            att = shallow.att(torch.cat([x_s, r], 1))
            return shallow.conv2(F.interpolate(x_s * att[:, :1] + r * att[:, 1:], size=(4, 4), mode="nearest"))
        torch.testing.assert_close(out_d, deep.conv2(x_d))
        torch.testing.assert_close(out_s, fused(x_d))
        assert not torch.allclose(out_s, fused(deep.conv1(s_deep)), atol=1e-3)   # the 3x3 map, un-resized


# ----------------------------------------------------------------------------- DeepInversion

def test_deepinversion_priors_are_the_official_four_neighbour_norms_and_mean_image_norm():
    """NVlabs/DeepInversion deepinversion.py get_image_prior_losses (loss_var_l2 = sum of torch.norm of the
    right, down and two diagonal differences) and get_images (loss_l2 = norm(inputs.view(bs, -1), dim=1).mean())."""
    from explorer.schemes.data_free import image_l2_prior, total_variation
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])                   # [[a, b], [c, d]]
    # right: (a-b, c-d); down: (a-c, b-d); diagonals: c-b and a-d
    by_hand = math.sqrt(1 + 16) + math.sqrt(9 + 36) + 2 + 7
    assert total_variation(x).item() == pytest.approx(by_hand, rel=1e-6)
    # one norm over the whole batch, not a per-image sum: the second image is twice the first
    x2 = torch.cat([x, 2 * x])
    assert total_variation(x2).item() == pytest.approx(math.sqrt(5) * by_hand, rel=1e-6)
    imgs = torch.tensor([[[[3.0, 4.0]]], [[[6.0, 8.0]]]])            # norms 5 and 10
    assert image_l2_prior(imgs).item() == pytest.approx(7.5, rel=1e-6)


def test_deepinversion_keeps_the_images_of_lowest_loss():
    """NVlabs/DeepInversion deepinversion.py get_images: `if best_cost > loss.item(): best_inputs = ...`.
    With one iteration the only loss measured is the starting noise's, so the pool is that noise, not the
    image one Adam step later."""
    di = get_scheme("deepinversion")(scheme_ctx("deepinversion"), n_images=16, iterations=1)
    di.synthesise()
    start = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(di.ctx.config.seed + 13))
    torch.testing.assert_close(di.pool, start)


# ----------------------------------------------------------------------------- CC and IRG

def test_cc_default_is_repdistillers_correlation_surrogate():
    """HobbitLong/RepDistiller distiller_zoo/CC.py Correlation: delta = |f_s - f_t|;
    loss = mean((delta[:-1] * delta[1:]).sum(1)), on LinearEmbed heads; weight 0.02."""
    f_s = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    f_t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    # deltas: (1, 2), (1, 2), (2, 0) -> pairs: 1*1 + 2*2 = 5, 1*2 + 2*0 = 2 -> mean 3.5
    assert KF.cc_correlation_loss(f_s, f_t).item() == pytest.approx(3.5)
    cc = get_method("cc")(_pair_ctx())
    assert cc.hp["form"] == "crd" and cc.default_weight == 0.02
    e_s, e_t = torch.randn(3, 64), torch.randn(3, 128)
    out = Outputs(torch.zeros(3, 10), embedding=e_s), Outputs(torch.zeros(3, 10), embedding=e_t)
    with torch.no_grad():
        d = ((e_s @ cc.embed_s.weight.t() + cc.embed_s.bias) - (e_t @ cc.embed_t.weight.t() + cc.embed_t.bias)).abs()
        expected = sum(float((d[i] * d[i + 1]).sum()) for i in range(2)) / 2
        assert cc(*out, Batch(torch.zeros(3), torch.zeros(3), torch.arange(3)))["cc"].item() == pytest.approx(
            expected, rel=1e-5)


def test_irg_max_sq_edge_is_kd_zoos_squared_distance_over_max():
    """AberHu/Knowledge-Distillation-Zoo kd_losses/irg.py euclidean_dist_feat / euclidean_dist_fm
    (squared=True): squared distances, zero diagonal, divided by their maximum; then F.mse_loss."""
    s = torch.tensor([[0.0], [1.0], [3.0]])          # squared distances 1, 9, 4 -> / 9
    t = torch.tensor([[0.0], [1.0], [2.0]])          # squared distances 1, 4, 1 -> / 4
    # off-diagonal differences: 1/9 - 1/4 = -5/36, 1 - 1 = 0, 4/9 - 1/4 = 7/36, each twice, over 9 entries
    expected = 2 * (25 + 49) / 36 ** 2 / 9
    assert KF.irg_edge_loss(s, t, form="max_sq").item() == pytest.approx(expected, rel=1e-6)
    assert get_method("irg")(_pair_ctx()).hp["edge_form"] == "mean"     # what the default weights were benchmarked with


# ---------------------------------------------------------------------- logit standardisation (Sun et al., CVPR 2024)
def test_every_logit_based_method_has_the_standardize_switch():
    from explorer.kd import get_method, list_methods
    response = [k for k in list_methods() if get_method(k).category == "response"]
    assert {"kd", "dkd", "ctkd", "dist"} <= set(response)
    for key in response:
        spec = {h.name: h for h in get_method(key).hparams}["standardize"]
        assert spec.default is False, key   # off by default: the method as published


def test_kd_with_standardize_equals_the_official_ls_formula_by_hand():
    # sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py: normalize(z) = (z - mean) / (1e-7 + std),
    # std unbiased; then KL(softmax(z_t/T) || softmax(z_s/T)) summed over classes, batch mean, times T^2
    import math

    from explorer.kd import get_method
    from explorer.kd.base import Outputs, PairContext
    zs = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]], dtype=torch.float64)
    zt = torch.tensor([[2.0, 0.0, 8.0], [1.0, 1.0, 7.0]], dtype=torch.float64)
    T = 2.0

    def z_score(row):
        m = sum(row) / len(row)
        sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
        return [(v - m) / (1e-7 + sd) for v in row]

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    want = 0.0
    for a, b in zip(zs.tolist(), zt.tolist()):
        p_s, p_t = softmax(z_score(a)), softmax(z_score(b))
        want += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    want = want / 2 * T * T
    ctx = PairContext((), (), 0, 0, 3, 10, 1, 1)
    method = get_method("kd")(ctx, temperature=T, standardize=True)
    got = method(Outputs(zs), Outputs(zt), None)["kd"]
    assert got.item() == pytest.approx(want, rel=1e-9)
    plain = get_method("kd")(ctx, temperature=T)(Outputs(zs), Outputs(zt), None)["kd"]
    assert plain.item() != pytest.approx(want, rel=1e-3)   # the switch changes the loss


# ----------------------------------------------------------------------------- FSP (an init stage, then CE alone)
def _fsp_by_hand(feats):
    """RepDistiller distiller_zoo/FSP.py `compute_fsp`: for each consecutive (bottom, top), the larger map
    avg-pooled to the smaller, then (bottom.unsqueeze(1) * top.unsqueeze(2)).mean over the positions."""
    out = []
    for bot, top in zip(feats, feats[1:]):
        if bot.shape[2] > top.shape[2]:
            bot = F.adaptive_avg_pool2d(bot, (top.shape[2], top.shape[2]))
        elif bot.shape[2] < top.shape[2]:
            top = F.adaptive_avg_pool2d(top, (bot.shape[2], bot.shape[2]))
        out.append((top.flatten(2).unsqueeze(2) * bot.flatten(2).unsqueeze(1)).mean(-1))   # [b, c_top, c_bot]
    return out


class _Batches:
    """The dataset surface the offline scheme and its init stage read: 120 digit-sized images, 10 classes."""
    num_classes, train = 10, range(120)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(120, 1, 8, 8, generator=g), torch.arange(120) % 10

    def batches(self, split, batch_size, shuffle=False, augment=False, generator=None):
        order = torch.randperm(len(self.x), generator=generator) if shuffle else torch.arange(len(self.x))
        for i in range(0, len(order), batch_size):
            yield self.x[order[i:i + batch_size]], self.y[order[i:i + batch_size]], order[i:i + batch_size]


def test_fsp_trains_the_student_features_in_an_init_stage_then_the_main_stage_is_ce_alone():
    """RepDistiller train_student.py `--distill fsp` (scripts/run_cifar_distill.sh `-a 0 -b 50`): helper/pretrain.py
    `init` trains model_s.get_feat_modules() on sum(FSP(feat_s[:-1], feat_t[:-1])) for init_epochs (30 of 240) at
    the run's lr (only `factor` gets 0.01); helper/loops.py then sets loss_kd = 0 for fsp: the main loss is CE."""
    from explorer.models.outputs import forward_outputs
    info = get_method("fsp").describe()
    assert info["init_stage"] and info["default_weight"] == 0.0 and info["default_ce_weight"] == 1.0
    assert {h["name"]: h["default"] for h in info["hparams"]} == {"init_fraction": 30 / 240}   # no init_lr
    config = resolve(RunConfig(dataset="digits", n_train=120, student="cnn_small", teacher="cnn_small",
                               methods=["fsp"], epochs=8, batch_size=64))            # ceil(8 x 30/240) = 1 init epoch
    data = _Batches()
    torch.manual_seed(0)
    teacher, student = freeze(create_model("cnn_small", 10, 1, 8)), create_model("cnn_small", 10, 1, 8)
    ctx = RunContext(config, data, torch.device("cpu"), student, teacher, None, 2, 8)
    offline = get_scheme("offline")(ctx)
    fsp = offline.methods[0]
    assert offline.weights == [0.0] and fsp.init_epochs() == 1
    x, y, idx = next(iter(data.batches("train", 16)))
    s, t = (forward_outputs(mdl, x, {"stages"}, sp) for mdl, sp in ((student, offline.s_specs),
                                                                    (teacher, offline.t_specs)))
    assert [i for i, _ in fsp.pairs] == list(range(len(s.stages))) == [j for _, j in fsp.pairs]   # stem included
    expected = sum((gs - gt).pow(2).mean() for gs, gt in zip(_fsp_by_hand(s.stages), _fsp_by_hand(t.stages)))
    assert fsp.init_loss(s, t, None)["fsp_init"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    offline.train()
    _, losses = offline.train_step(Batch(x, y, idx))        # the first step runs the init stage
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert bool(fsp.init_done) and changed and not any(n.startswith("fc.") for n in changed)   # features only
    assert set(losses) == {"ce", "fsp"} and losses["fsp"].item() == 0.0 and losses["ce"].item() > 0
