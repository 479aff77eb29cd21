"""Small vision transformers (explorer/models/vit.py), their attention taps, attention rollout
(explorer/analysis/rollout.py), transformer probes and the DeiT loss (explorer/schemes/deit.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.probes import capture_probe, load_probe, save_probe
from explorer.analysis.rollout import cls_attention, rollout, rollout_map
from explorer.errors import ConfigError
from explorer.models import create_model, list_models, tap
from explorer.models.outputs import TapSpecs, forward_outputs
from explorer.recipes import resolve
from explorer.schemes.deit import deit_loss

VITS = list_models("vit")


def _attn(*rows_per_head):
    """(1, heads, N, N) from each head's N x N rows."""
    return torch.tensor([list(rows_per_head)], dtype=torch.float32)


# ----------------------------------------------------------------------------- rollout

def test_rollout_equals_a_hand_computation_on_two_blocks():
    # N = 2 (class token + one patch). Block 1: both heads uniform -> fused [[.5,.5],[.5,.5]] -> with the
    # identity: [[.75,.25],[.25,.75]]. Block 2: heads swap / keep -> mean [[.5,.5],[.5,.5]] -> the same.
    a1 = _attn([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]])
    a2 = _attn([[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    # R = A2' A1' = [[.75*.75 + .25*.25, .75*.25 + .25*.75], ...] = [[.625, .375], [.375, .625]]
    assert torch.allclose(rollout([a1, a2]), torch.tensor([[[0.625, 0.375], [0.375, 0.625]]]))
    assert torch.allclose(rollout_map([a1, a2]), torch.tensor([[[0.375]]]))


def test_rollout_multiplies_blocks_first_to_last_like_an_explicit_loop():
    g = torch.Generator().manual_seed(0)
    blocks = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g) * 2, dim=-1) for _ in range(2)]
    got = rollout(blocks)
    for b in range(2):
        fused = []
        for a in blocks:   # by hand: mean over heads, + identity, row-normalise, entry by entry
            m = [[sum(float(a[b, h, i, j]) for h in range(3)) / 3 for j in range(5)] for i in range(5)]
            m = [[0.5 * m[i][j] + 0.5 * (i == j) for j in range(5)] for i in range(5)]
            fused.append([[v / sum(row) for v in row] for row in m])
        first, second = fused
        want = [[sum(second[i][k] * first[k][j] for k in range(5)) for j in range(5)] for i in range(5)]
        assert torch.allclose(got[b], torch.tensor(want), atol=1e-6)
    # the order matters: the reversed product differs, so a swapped multiplication would be caught
    assert not torch.allclose(got, rollout(blocks[::-1]), atol=1e-4)
    heads = cls_attention(blocks, prefix_tokens=1)
    assert heads.shape == (2, 2, 3, 2, 2) and torch.equal(heads[:, 1, 2].flatten(1), blocks[1][:, 2, 0, 1:])
    assert rollout_map(blocks).shape == (2, 2, 2)


def test_rollout_refuses_non_square_patches_and_wrong_shapes():
    with pytest.raises(ValueError, match="square"):
        rollout_map([torch.full((1, 1, 4, 4), 0.25)])     # 3 patches after the class token
    with pytest.raises(ValueError, match="heads"):
        rollout([torch.ones(2, 3, 3)])


# ----------------------------------------------------------------------------- models and taps

@pytest.mark.parametrize("name", VITS)
def test_stage_attention_value_and_embedding_shapes(name):
    torch.manual_seed(0)
    for c, size in ((1, 8), (3, 32)):
        model = create_model(name, num_classes=10, in_channels=c, image_size=size)
        patch, prefix = model.patch, model.kd_prefix_tokens
        side, n = math.ceil(size / patch), prefix + math.ceil(size / patch) ** 2
        heads, d = model.blocks[0].attn.heads, model.dim
        out = forward_outputs(model, torch.randn(2, c, size, size), {"stages", "embedding", "attention", "values"},
                              TapSpecs.of(model))
        assert len(out.stages) == len(out.attentions) == len(out.values) == len(model.blocks)
        assert all(s.shape == (2, d, side, side) for s in out.stages)
        assert all(a.shape == (2, heads, n, n) for a in out.attentions)
        assert all(torch.allclose(a.sum(-1), torch.ones(2, heads, n)) for a in out.attentions)
        assert all(v.shape == (2, heads, n, d // heads) for v in out.values)
        assert out.embedding.shape == (2, d)
    assert prefix == (2 if name.startswith("deit") else 1)


def test_taps_change_nothing_and_record_the_blocks_own_output_and_attention():
    torch.manual_seed(0)
    model = create_model("deit_tiny_p2", 10, 1, 8).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        plain = model(x)
        with tap(model, model.kd_stages + model.kd_attention + model.kd_values) as feats:
            tapped = model(x)
        assert torch.equal(plain, tapped)
        # by hand: embed, run the blocks one at a time, compare the tapped block output (as a map) and attention
        tokens = model.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = torch.cat([model.cls_token, model.dist_token], 1).expand(3, -1, -1)
        h = torch.cat([prefix, tokens], 1) + model.pos_embed
        for i, block in enumerate(model.blocks):
            attn = block.attn
            q, k, _ = attn.qkv(block.norm1(h)).reshape(3, h.shape[1], 3, attn.heads, -1).permute(2, 0, 3, 1, 4)
            probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
            assert torch.allclose(feats[f"blocks.{i}.attn.probs"], probs, atol=1e-6)
            h = block(h)
            assert torch.equal(feats[f"blocks.{i}"], h[:, 2:].transpose(1, 2).reshape(3, -1, 4, 4))


def test_distillation_token_heads_in_train_and_eval_mode():
    torch.manual_seed(0)
    model = create_model("deit_tiny_p2", 10, 1, 8)
    x = torch.randn(4, 1, 8, 8)
    with tap(model, ["head", "head_dist"]) as feats:
        train_out = model.train()(x)
    assert torch.equal(train_out, feats["head"]) and not torch.allclose(feats["head"], feats["head_dist"])
    with torch.no_grad(), tap(model, ["head", "head_dist"]) as feats:
        eval_out = model.eval()(x)
    assert torch.allclose(eval_out, (feats["head"] + feats["head_dist"]) / 2)
    # the plain ViT gains the token in place: its class path's weights are kept, its state_dict then fits deit_*
    vit = create_model("vit_tiny_p2", 10, 1, 8)
    before = vit.pos_embed.detach().clone()
    vit.enable_distillation_token()
    assert vit.kd_prefix_tokens == 2 and torch.equal(vit.pos_embed[:, [0, *range(2, 18)]], before)
    create_model("deit_tiny_p2", 10, 1, 8).load_state_dict(vit.state_dict())


def test_other_input_sizes_interpolate_the_positions():
    model = create_model("vit_tiny_p4", 10, 3, 32).eval()
    with torch.no_grad(), tap(model, model.kd_stages[-1:]) as feats:
        assert model(torch.randn(1, 3, 30, 30)).shape == (1, 10)   # padded to 32: the native 8x8 grid
        assert feats[model.kd_stages[-1]].shape[-2:] == (8, 8)
        model(torch.randn(1, 3, 16, 16))
        assert feats[model.kd_stages[-1]].shape[-2:] == (4, 4)


# ----------------------------------------------------------------------------- probes

def test_probes_store_class_attention_and_rollout_and_old_probes_still_load(tmp_path):
    torch.manual_seed(0)
    vit, cnn = create_model("deit_tiny_p2", 10, 1, 8), create_model("cnn_tiny", 10, 1, 8)
    x, y = torch.randn(5, 1, 8, 8), torch.arange(5)
    s = capture_probe(vit, x, vit.kd_stages, vit.kd_embedding, batch_size=2, attention_specs=vit.kd_attention)
    assert s["cls_attention"].shape == (5, 4, 2, 4, 4) and s["rollout"].shape == (5, 4, 4)
    with torch.no_grad(), tap(vit.eval(), vit.kd_attention) as feats:
        vit(x)
    assert torch.allclose(s["rollout"], rollout_map([feats[a] for a in vit.kd_attention], 2), atol=1e-6)
    t = capture_probe(cnn, x, cnn.kd_stages, cnn.kd_embedding)
    assert "rollout" not in t
    loaded = load_probe(save_probe(tmp_path / "p.pt", 3, x, y, torch.arange(5), s, t))
    assert torch.allclose(loaded["student"]["cls_attention"].float(), s["cls_attention"], atol=1e-3)
    assert torch.equal(loaded["student"]["rollout"], s["rollout"]) and "rollout" not in loaded["teacher"]
    old = {k: v for k, v in s.items() if k not in ("cls_attention", "rollout")}   # a probe written before
    assert "rollout" not in load_probe(save_probe(tmp_path / "old.pt", 0, x, y, torch.arange(5), old, t))["student"]


# ----------------------------------------------------------------------------- DeiT

def test_deit_loss_hard_and_soft_follow_the_official_code():
    g = torch.Generator().manual_seed(0)
    z_cls, z_dist, z_t = (torch.randn(6, 10, generator=g) for _ in range(3))
    y = torch.randint(0, 10, (6,), generator=g)
    hard = deit_loss(z_cls, z_dist, z_t, y, "hard", 0.5, 1.0)
    assert torch.allclose(hard["ce"], 0.5 * F.cross_entropy(z_cls, y))
    assert torch.allclose(hard["distill"], 0.5 * F.cross_entropy(z_dist, z_t.argmax(1)))
    tau, alpha = 3.0, 0.1
    soft = deit_loss(z_cls, z_dist, z_t, y, "soft", alpha, tau)
    p_t, log_p_s = torch.softmax(z_t / tau, 1), torch.log_softmax(z_dist / tau, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum() / z_dist.numel() * tau ** 2   # sum / (B * K): their "legacy" mean
    assert torch.allclose(soft["distill"], alpha * kl, atol=1e-6)
    assert torch.allclose(soft["ce"], (1 - alpha) * F.cross_entropy(z_cls, y))


def test_deit_refuses_a_student_without_a_distillation_token_at_resolve_time():
    with pytest.raises(ConfigError, match=r"student.*distillation token.*deit_tiny_p2"):
        resolve({"dataset": "digits", "student": "cnn_tiny", "scheme": "deit", "methods": []})
    with pytest.raises(ConfigError, match="vit_tiny_p2 has none"):
        resolve({"dataset": "digits", "student": "vit_tiny_p2", "scheme": "deit", "methods": []})
    assert resolve({"dataset": "digits", "student": "deit_tiny_p2", "scheme": "deit", "methods": []}).scheme == "deit"
