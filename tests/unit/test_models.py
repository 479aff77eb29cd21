"""Model zoo: every registered model builds, runs on tiny to 64 px inputs, exposes working taps."""
from collections import Counter

import pytest
import torch
from torch import nn

from explorer.models import (TapError, create_model, embedding_spec, get_model_spec, list_models, model_info,
                             stage_specs, tap)
from explorer.models.sequence import is_sequence_arch

# image models; the sequence (language) models read token windows: tests/unit/test_text_lm.py
ALL = [n for n in list_models() if not is_sequence_arch(n)]
CIFAR = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
         "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "MobileNetV2",
         "ShuffleV1", "ShuffleV2"]
ONE_PER_FAMILY = ["cnn_small", "resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"]
N_STAGES = {"cnn": 3, "resnet": 4, "wrn": 4, "vgg": 5, "mobilenet": 5, "shufflenet": 4, "vit": 4}

# Parameter counts at 100 classes, CRD (Tian et al., ICLR 2020) benchmark table, in millions.
CRD_PARAMS_M = {"resnet20": 0.28, "resnet56": 0.86, "resnet110": 1.74, "resnet8x4": 1.23, "resnet32x4": 7.43,
                "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26, "vgg8": 3.96, "vgg13": 9.46,
                "MobileNetV2": 0.81, "ShuffleV1": 0.95, "ShuffleV2": 1.36}


def _seed():
    torch.manual_seed(0)


def test_registry_contents():
    assert set(CIFAR) <= set(ALL)
    assert list_models("cnn") == ["cnn_tiny", "cnn_small", "cnn_medium", "cnn_large"]
    for name in ALL:
        assert get_model_spec(name).family in N_STAGES
        assert get_model_spec(name).description


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes(name):
    _seed()
    gray = create_model(name, num_classes=7, in_channels=1)
    for size in (8, 28):
        assert gray(torch.randn(2, 1, size, size)).shape == (2, 7)
    rgb = create_model(name, num_classes=7, in_channels=3)
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    rgb.eval()
    with torch.no_grad():
        assert rgb(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize("name", ALL)
def test_taps_fire_once_with_expected_shapes(name):
    _seed()
    model = create_model(name, num_classes=10)
    stages, preact, emb = stage_specs(model), stage_specs(model, preact=True), embedding_spec(model)
    assert len(stages) == len(preact) == N_STAGES[get_model_spec(name).family]
    classifier = dict(model.named_modules())[model.kd_classifier]
    assert isinstance(classifier, nn.Linear)

    # every tapped module is called exactly once per forward (a reused module would record the wrong call)
    calls = Counter()
    modules = dict(model.named_modules())
    handles = [modules[s.partition(":")[0]].register_forward_hook(lambda m, i, o, s=s: calls.update([s]))
               for s in set(stages + preact + [emb])]
    x = torch.randn(2, 3, 32, 32)
    with tap(model, stages + preact + [emb]) as feats:
        logits = model(x)
    for h in handles:
        h.remove()
    assert all(c == 1 for c in calls.values()), calls
    assert logits.shape == (2, 10)

    prev_hw = None
    for s, p in zip(stages, preact):
        f, fp = feats[s], feats[p]
        assert f.dim() == 4 and f.shape[0] == 2, (s, f.shape)
        assert fp.shape == f.shape, (s, p)
        hw = f.shape[-1]
        assert prev_hw is None or hw <= prev_hw, "stages must go shallow -> deep"
        prev_hw = hw
        if s != p:  # a ReLU sits between them
            assert (f >= 0).all(), s
            assert (fp < 0).any(), p
            assert torch.equal(torch.relu(fp), f), (s, p)
    e = feats[emb]
    assert e.shape == (2, classifier.in_features)
    assert torch.allclose(classifier(e), logits, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_model_info(name):
    small = model_info(name, image_size=16)
    info = model_info(name)
    assert info["params"] > 0 and info["flops"] > 0
    assert info["params"] == small["params"]
    assert info["flops"] > small["flops"]


@pytest.mark.parametrize("name", sorted(CRD_PARAMS_M))
def test_param_counts_match_crd(name):
    params = sum(p.numel() for p in create_model(name, num_classes=100).parameters())
    assert params / 1e6 == pytest.approx(CRD_PARAMS_M[name], rel=0.05)


def test_cnn_sizes():
    sizes = [model_info(n)["params"] for n in list_models("cnn")]
    assert sizes == sorted(sizes)
    for got, want in zip(sizes, (10e3, 50e3, 200e3, 800e3)):
        assert want / 1.5 < got < want * 1.5


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_backward_reaches_all_parameters(name):
    _seed()
    model = create_model(name, num_classes=5)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError) as err:
        create_model("resnet9000")
    assert "resnet9000" in str(err.value) and "resnet20" in str(err.value) and "cnn_small" in str(err.value)


def test_tap_on_missing_module():
    model = create_model("resnet8")
    with pytest.raises(TapError, match="layer9"):
        with tap(model, ["layer9"]):
            pass


def test_plain_sequential_with_explicit_taps():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    with pytest.raises(TapError):
        stage_specs(model)
    with pytest.raises(TapError):
        embedding_spec(model)
    with tap(model, ["1", "1:in", "3"]) as feats:
        out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 3)
    assert feats["1"].shape == feats["1:in"].shape == (2, 4, 8, 8)
    assert torch.equal(feats["1"], torch.relu(feats["1:in"]))
    assert feats["3"].shape == (2, 4)
    assert [t.shape for t in feats.ordered()] == [(2, 4, 8, 8), (2, 4, 8, 8), (2, 4)]


def _hooked_linear_conv_flops(model, example):
    """2 x MACs of the Conv2d and Linear modules alone, counted by forward hooks (the counter before attention)."""
    total = []

    def hook(m, inp, out):
        k = m.in_features if isinstance(m, torch.nn.Linear) else \
            (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total.append(2 * out.numel() * k)
    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        model.eval()(example)
    for h in hs:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "MobileNetV2", "vit_tiny_p2", "vit_small_p4"])
def test_flops_count_attention_products(name):
    """CNNs: the operator count equals the Conv2d/Linear hook count. ViTs: it adds QK^T and attention @ V,
    2 * N^2 * C each per block (N tokens with the class token, C the width) -- 3x the linear layers' cost on
    vit_tiny_p2 at 32 px, which the module hooks missed."""
    from explorer.models.flops import count_flops
    from explorer.models.registry import create_model
    model = create_model(name, num_classes=10, in_channels=3, image_size=32)
    example = torch.zeros(1, 3, 32, 32)
    hooked = _hooked_linear_conv_flops(model, example)
    if not name.startswith("vit"):
        assert count_flops(model, example) == hooked
        return
    n_tokens = (32 // model.patch) ** 2 + 1
    attention = len(model.blocks) * 2 * (2 * n_tokens ** 2 * model.dim)
    assert count_flops(model, example) == hooked + attention
