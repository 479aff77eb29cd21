"""timm models by name (explorer/models/timm_models.py): the timm: spelling, its errors, taps from timm's own
feature metadata, the attention tap, and pretrained weights read from the local cache only.

Tests that need timm are skipped where it cannot be imported (the main venv); scripts/test.sh runs this file
in .venv-timm, where it can (scripts/setup.sh --timm)."""
import sys

import pytest
import torch

from explorer import cli
from explorer.config import ConfigError
from explorer.models import MODELS, create_model, get_model_spec, model_info, tap
from explorer.models import timm_models as T
from explorer.models.outputs import TapSpecs, forward_outputs
from explorer.recipes import resolve

try:
    import timm
    WHY = ""
except Exception as e:   # not installed, or a torchvision built for another torch
    timm, WHY = None, f"timm cannot be imported here ({type(e).__name__}: {e}); scripts/setup.sh --timm makes .venv-timm"

pytestmark = pytest.mark.timm
needs_timm = pytest.mark.skipif(timm is None, reason=WHY)
VIT = "timm:vit_tiny_patch16_224?patch_size=4&depth=2"   # 8x8 digits: a 2x2 grid of patch tokens


def test_the_timm_spelling_and_what_it_refuses():
    assert T.parse("timm:resnet18") == ("resnet18", False, {})
    assert T.parse("timm:resnet18.a1_in1k?pretrained") == ("resnet18.a1_in1k", True, {})
    assert T.parse("timm:vit_tiny_patch16_224?patch_size=4&drop_rate=0.1&class_token=false&global_pool=avg") == (
        "vit_tiny_patch16_224", False, {"patch_size": 4, "drop_rate": 0.1, "class_token": False, "global_pool": "avg"})
    for bad, why in [("timm:ResNet", "must look like"), ("timm:", "must look like"),
                     ("timm:resnet18?num_classes=3", "set from the dataset"),
                     ("timm:resnet18?img_size=64", "set from the dataset"),
                     ("timm:resnet18?pretrained_cfg=x", "not allowed"), ("timm:resnet18?frozen", "not allowed"),
                     ("timm:resnet18?a=b;c", "pretrained' or key=value")]:
        with pytest.raises(ValueError, match=why):
            T.parse(bad)
        with pytest.raises(ConfigError, match="config field 'teacher'"):
            resolve({"dataset": "digits", "teacher": bad})


def test_without_timm_a_timm_name_says_how_to_install_and_the_zoo_still_works(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)   # `import timm` now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"config field 'student'.*timm cannot be imported.*setup.sh --timm"):
        resolve({"dataset": "digits", "student": "timm:resnet10t"})
    assert "timm:resnet10t" not in MODELS
    assert resolve({"dataset": "digits", "student": "cnn_small"}).student == "cnn_small"
    assert cli.main(["models", "--timm", "resnet"]) == cli.EXIT_USAGE
    assert "setup.sh --timm" in capsys.readouterr().err


@needs_timm
def test_an_unknown_timm_name_gets_the_close_match(capsys):
    with pytest.raises(ConfigError, match=r"config field 'student': timm has no model 'resnet10x' \(did you mean "
                                          r"'resnet10t'"):
        resolve({"dataset": "digits", "student": "timm:resnet10x"})
    with pytest.raises(KeyError, match="did you mean 'resnet10t'"):
        get_model_spec("timm:resnet10x")
    with pytest.raises(ConfigError, match="Invalid pretrained tag.*resnet10t.c3_in1k"):
        resolve({"dataset": "digits", "student": "timm:resnet10t.nosuchtag"})
    assert "timm:resnet10t" in MODELS and "timm:resnet10x" not in MODELS
    assert cli.main(["models", "--timm", "resnet10"]) == 0
    listed = capsys.readouterr().out.split()
    assert "timm:resnet10t" in listed and all(n.startswith("timm:") and "resnet10" in n for n in listed)
    assert get_model_spec("timm:resnet10t").family == "timm"


@needs_timm
def test_a_timm_cnn_gets_its_stages_from_feature_info_and_fits_the_data():
    model = create_model("timm:resnet10t", num_classes=7, in_channels=1, image_size=8).eval()
    info = list(model.feature_info)
    assert model.kd_stages == model.kd_preact == [f["module"] for f in info] == ["act1", "layer1", "layer2",
                                                                                   "layer3", "layer4"]
    x = torch.randn(3, 1, 8, 8)
    out = forward_outputs(model, x, {"stages", "embedding"}, TapSpecs.of(model))
    assert out.logits.shape == (3, 7)
    assert [s.shape[1] for s in out.stages] == [f["num_chs"] for f in info]
    with torch.no_grad():   # the embedding is timm's own pooled pre-logits feature
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(out.embedding, pre)
    assert model_info("timm:resnet10t", 7, 1, 8)["params"] == sum(p.numel() for p in model.parameters())


@needs_timm
def test_a_timm_vit_taps_blocks_as_token_maps_and_its_attention():
    model = create_model(VIT, num_classes=10, in_channels=1, image_size=8).eval()
    assert model.kd_stages == ["blocks.0", "blocks.1"] and model.kd_prefix_tokens == model.num_prefix_tokens == 1
    assert model.kd_attention == ["blocks.0.attn.attn_drop", "blocks.1.attn.attn_drop"]
    assert model.kd_values == ["blocks.0.attn.qkv.kd_values", "blocks.1.attn.qkv.kd_values"]
    x = torch.randn(2, 1, 8, 8)
    raw = {}
    hook = model.blocks[1].register_forward_hook(lambda m, i, o: raw.update(tokens=o))
    out = forward_outputs(model, x, {"stages", "embedding", "attention"}, TapSpecs.of(model))
    hook.remove()
    tokens = raw["tokens"]                                             # (B, 1 + 2*2, 192)
    assert out.stages[1].shape == (2, 192, 2, 2)
    assert torch.equal(out.stages[1], tokens[:, 1:].transpose(1, 2).reshape(2, 192, 2, 2))
    with torch.no_grad():
        assert torch.allclose(out.embedding, model.forward_head(model.forward_features(x), pre_logits=True))
    assert [a.shape for a in out.attentions] == [(2, 3, 5, 5)] * 2
    values = forward_outputs(model, x, {"values"}, TapSpecs.of(model)).values
    assert [v.shape for v in values] == [(2, 3, 5, 64)] * 2


@needs_timm
def test_fused_attention_off_leaves_the_outputs_and_the_tap_is_the_softmax_probabilities():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", patch_size=4, depth=2, img_size=8, in_chans=1,
                              num_classes=10).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        before, block_before = model(x), model.blocks[0](model.patch_embed(x))
    assert all(b.attn.fused_attn for b in model.blocks)                # timm's default: no probabilities
    T.declare_taps(model)
    assert not any(b.attn.fused_attn for b in model.blocks)
    seen = {}
    hook = model.blocks[0].norm1.register_forward_hook(lambda m, i, o: seen.update(x=o))   # the attention's input
    with torch.no_grad(), tap(model, model.kd_attention) as feats:
        after = model(x)
    hook.remove()
    with torch.no_grad():
        block_after = model.blocks[0](model.patch_embed(x))
    assert torch.allclose(after, before, atol=1e-5) and torch.allclose(block_after, block_before, atol=1e-5)
    attn = model.blocks[0].attn
    b, n, c = seen["x"].shape
    with torch.no_grad(), tap(model, model.kd_values) as values:
        model(x)
    q, k, v = attn.qkv(seen["x"]).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    want = (q * attn.scale @ k.transpose(-2, -1)).softmax(-1)           # timm's Attention, written out
    assert torch.allclose(feats["blocks.0.attn.attn_drop"], want, atol=1e-5)
    assert torch.allclose(values["blocks.0.attn.qkv.kd_values"], v, atol=1e-5)   # (B, heads, N, d_head)
    assert set(model.state_dict()) == set(timm.create_model("vit_tiny_patch16_224", patch_size=4, depth=2, img_size=8,
                                                              in_chans=1, num_classes=10).state_dict())


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@needs_timm
def test_pretrained_weights_absent_from_the_cache_are_refused_with_where_to_put_them(empty_caches):
    with pytest.raises(ConfigError, match="not in the local cache, and KD Explorer never downloads") as e:
        resolve({"dataset": "digits", "student": "timm:resnet10t?pretrained"})
    assert str(empty_caches / "hf" / "models--timm--resnet10t.c3_in1k") in str(e.value)
    assert str(empty_caches / "torch" / "hub" / "checkpoints") in str(e.value)
    with pytest.raises(KeyError, match="not in the local cache"):
        create_model("timm:resnet10t?pretrained", 10, 1, 8)


@needs_timm
@pytest.mark.parametrize("layout", ["huggingface", "torch.hub"])
def test_pretrained_weights_in_the_cache_are_loaded_and_the_head_refitted(empty_caches, layout):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t")                            # the 1000-class ImageNet layout
    cfg = timm.models.get_pretrained_cfg("resnet10t")
    if layout == "huggingface":
        from safetensors.torch import save_file
        folder = empty_caches / "hf" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("abc123")
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        save_file(source.state_dict(), folder / "snapshots" / "abc123" / "model.safetensors")
    else:
        path = empty_caches / "torch" / "hub" / "checkpoints" / cfg.url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True)
        torch.save(source.state_dict(), path)
    cfg_ok = resolve({"dataset": "digits", "student": "timm:resnet10t?pretrained"})
    model = create_model(cfg_ok.student, num_classes=10, in_channels=3, image_size=8)
    assert torch.equal(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)   # the cached weights
    assert model.fc.weight.shape == (10, 512)                                          # a new head


def test_the_setup_stamp_counts_only_the_extras_a_venv_installed():
    """.venv-timm installs the test and timm extras, the main venv test and png: an extra neither uses (ray)
    must not make scripts/setup.sh install again on every call (scripts/setup_stamp.py)."""
    import re
    import runpy
    from importlib import metadata
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    stamp = runpy.run_path(str(repo / "scripts" / "setup_stamp.py"))
    if not stamp["editable_from"](repo, "test"):
        pytest.skip("kd-explorer is not installed editable from this checkout here")
    missing = set()
    dist = next(d for d in metadata.distributions(name="kd-explorer")   # the editable install, as setup_stamp
                if d.read_text("direct_url.json") and '"editable": true' in d.read_text("direct_url.json"))
    for req in dist.requires or []:
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        try:
            metadata.distribution(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0))
        except metadata.PackageNotFoundError:
            if extra:
                missing.add(extra.group(1))
    if not missing:
        pytest.skip("every extra's requirements are installed here")
    assert not stamp["editable_from"](repo, "test," + sorted(missing)[0])   # that extra would need an install
    assert stamp["fingerprint"](repo, "test,png") != stamp["fingerprint"](repo, "test,timm")
