"""Hidden-state transfer between language-model blocks (issue 16, item 3): a GPT block's (B, T, C) state is seen by
the feature methods as a (B, C, T, 1) map (explorer/models/sequence.py, applied by the taps), FitNet on it is
TinyBERT's MSE(H_S W_h + b, H_T) with a per-token linear W_h, the block x block CKA reads the same rows as before,
and text runs refuse the stage methods that do not read token states, naming those that do."""
import pytest
import torch

from explorer.analysis.cka import linear_cka
from explorer.analysis.lm import block_cka
from explorer.errors import ConfigError
from explorer.kd.base import Batch
from explorer.kd.fitnet import FitNet
from explorer.models import create_model
from explorer.models.outputs import TapSpecs, forward_outputs
from explorer.models.sequence import TOKEN_STATE_METHODS, build_args
from explorer.recipes import resolve
from explorer.schemes.offline import dry_pair

VOCAB, T = 94, 16


def _gpt(arch: str, seed: int):
    torch.manual_seed(seed)
    return create_model(arch, **build_args((T,), VOCAB))


def _block_outputs(model, ids) -> list[torch.Tensor]:
    """Each block's (B, T, C) output, recorded by hooks of this test's own (not the project's taps)."""
    seen = []
    handles = [b.register_forward_hook(lambda m, i, o: seen.append(o)) for b in model.blocks]
    model(ids)
    for h in handles:
        h.remove()
    return seen


def test_a_block_state_is_seen_as_a_channels_by_tokens_map():
    m = _gpt("gpt_2x64", 0)
    ids = torch.randint(0, VOCAB, (3, T))
    out = forward_outputs(m, ids, {"stages", "attention"}, TapSpecs.of(m))
    for stage, h in zip(out.stages, _block_outputs(m, ids)):
        assert stage.shape == (3, 64, T, 1)
        assert torch.equal(stage[:, :, :, 0], h.transpose(1, 2))   # channel c of token t = h[b, t, c]
    assert out.attentions[0].shape == (3, 4, T, T)                 # attention taps stay as they are


def test_fitnet_on_token_states_is_a_per_token_linear_regression():
    cfg = resolve({"dataset": "pydoc", "student": "gpt_1x32", "teacher": "gpt_2x64",
                   "methods": [{"key": "fitnet", "params": {"hint_stage": 0}}]})
    ctx = dry_pair(cfg, "gpt_1x32", "gpt_2x64", (T,), VOCAB)
    assert ctx.token_states and ctx.student_stages == ((32, T, 1),)
    method = FitNet(ctx, hint_stage=0)
    assert method.pairs == [(0, 1)]            # the student's one block meets the teacher's last (same depth)
    student, teacher = _gpt("gpt_1x32", 1), _gpt("gpt_2x64", 2)
    ids = torch.randint(0, VOCAB, (4, T))
    s = forward_outputs(student, ids, method.needs, TapSpecs.of(student))
    t = forward_outputs(teacher, ids, method.needs, TapSpecs.of(teacher))
    loss = method(s, t, Batch(ids, ids.reshape(-1), torch.arange(4)))["hint"]

    h_s, h_t = _block_outputs(student, ids)[0], _block_outputs(teacher, ids)[-1]   # (4, T, 32), (4, T, 64)
    reg = method.regressors[0].conv
    w, b = reg.weight[:, :, 0, 0], reg.bias                                     # W_h (64, 32), b (64,)
    by_hand = ((h_s @ w.T + b - h_t) ** 2).mean()                               # TinyBERT Eq. 8, element mean
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    loss.backward()
    assert student.blocks[0].mlp[0].weight.grad.abs().sum() > 0 and reg.weight.grad.abs().sum() > 0


def test_block_cka_reads_every_token_of_every_block():
    teacher, student = _gpt("gpt_2x64", 3), _gpt("gpt_1x32", 4)
    ids = torch.randint(0, VOCAB, (5, T))
    table = block_cka(teacher, student, ids)
    rows_t = [h.reshape(-1, 64) for h in _block_outputs(teacher, ids)]
    rows_s = [h.reshape(-1, 32) for h in _block_outputs(student, ids)]
    assert table.shape == (2, 1)
    for i, a in enumerate(rows_t):
        assert table.iloc[i, 0] == pytest.approx(linear_cka(a, rows_s[0]), abs=1e-9)


@pytest.mark.parametrize("method", ["ab", "ofd", "at", "nst", "ft", "simkd"])
def test_text_runs_refuse_the_other_stage_methods_naming_those_that_work(method):
    with pytest.raises(ConfigError) as e:
        resolve({"dataset": "pydoc", "methods": method})
    assert e.value.field == "methods[0]"
    assert all(k in str(e.value) for k in TOKEN_STATE_METHODS)


@pytest.mark.parametrize("config", [
    {"methods": [{"key": "fitnet", "params": {"hint_stage": 0}}, {"key": "vid"}, {"key": "sp"}, {"key": "irg"}]},
    {"scheme": "takd", "methods": "kd"},
    {"scheme": "mtkd_avg", "methods": "none"},
    {"scheme": "camkd", "methods": "none"},
])
def test_text_runs_accept_token_state_methods_and_the_teacher_schemes(config):
    cfg = resolve({"dataset": "pydoc", **config})
    assert cfg.student == "gpt_1x32"
