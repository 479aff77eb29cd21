"""Text datasets and the causal transformers: windows split by position, the tokenizer round trip, the folder
reader's checks, causality of the zoo's GPTs, cached generation equal to plain generation, and the config checks
that keep image-only methods, schemes and models off text runs."""
import gzip

import pytest
import torch

from explorer.data import RawData, load_dataset
from explorer.data.raw import DatasetFormatError, DatasetNotFoundError
from explorer.data.text import CONTEXT, PYDOC, CharTokenizer, read_text_folder, tokenizer_of
from explorer.errors import ConfigError
from explorer.models import create_model
from explorer.models.sequence import build_args, dummy_input
from explorer.recipes import resolve


def test_windows_are_next_tokens_and_splits_follow_the_text():
    d = load_dataset("pydoc")
    assert d.modality == "text" and d.shape == (CONTEXT,) and d.num_classes == len(d.classes)
    for split in (d.train, d.val, d.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1] == CONTEXT
        assert torch.equal(split.x[:, 1:], split.y[:, :-1])          # y is x shifted by one token
        assert torch.equal(split.y[:-1, -1], split.x[1:, 0])          # consecutive windows tile the text
    assert torch.equal(d.train.y[-1, -1], d.val.x[0, 0])              # validation follows training in the text
    tok = tokenizer_of(d)
    with gzip.open(PYDOC, "rt") as f:
        text = f.read()
    assert tok.decode(d.train.x[0]) == text[:CONTEXT]
    assert tok.decode(d.test.y[-1])[-5:] in text[-CONTEXT - 5:]
    x, y, idx = next(d.batches("train", 8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (8, CONTEXT) and y.shape == (8 * CONTEXT,) and torch.equal(y.view(8, -1), d.train.y[idx])
    assert len(load_dataset("pydoc", n_train=100).train) == 100
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("pydoc", n_train=10**6)


def test_tokenizer_round_trip_and_unknowns():
    tok = CharTokenizer.fit("hello world")
    assert tok.decode(tok.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("xyz")
    big = CharTokenizer.fit("".join(chr(0x100 + i) * (i + 1) for i in range(300)), max_vocab=10)
    assert len(big) == 10 and big.decode(big.encode(chr(0x100))) == "\ufffd"


def test_rawdata_text_form_is_checked():
    ok = torch.zeros(3, 4, dtype=torch.int64)
    RawData(ok, ok, ok, ok, ("a",), modality="text")
    with pytest.raises(ValueError, match="int64"):
        RawData(ok.float(), ok, ok, ok, ("a",), modality="text")
    with pytest.raises(ValueError, match="uint8"):   # images stay strict
        RawData(ok, ok, ok, ok, ("a",))


def test_text_folder_reads_txt_and_skips_the_rest(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat on the mat. " * 200)
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe bad utf8 " * 10)
    (tmp_path / "c.txt").write_bytes(b"nul\x00byte")
    (tmp_path / "d.png").write_bytes(b"\x89PNG")
    raw = read_text_folder(tmp_path)
    assert raw.modality == "text" and raw.extras["files"] == 1
    assert {p.rsplit("/", 1)[-1] for p, _ in raw.extras["skipped"]} == {"b.txt", "c.txt", "d.png"}
    (tmp_path / "a.txt").write_text("short")
    with pytest.raises(DatasetFormatError, match="at least"):
        read_text_folder(tmp_path)
    with pytest.raises(DatasetNotFoundError):
        read_text_folder(tmp_path / "missing")


@pytest.mark.parametrize("arch", ["gpt_1x32", "gpt_2x64", "gpt_4x128"])
def test_gpt_is_causal_and_returns_a_row_per_token(arch):
    torch.manual_seed(0)
    m = create_model(arch, **build_args((16,), 20)).eval()
    x = torch.randint(0, 20, (2, 16))
    z = m(x)
    assert z.shape == (2 * 16, 20) and torch.allclose(m.next_token_logits(x).reshape(-1, 20), z)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 20   # change the future: the past positions' logits must not move
    z2 = m.next_token_logits(x2)
    assert torch.allclose(z2[:, :10], m.next_token_logits(x)[:, :10], atol=1e-5)
    assert not torch.allclose(z2[:, 10:], m.next_token_logits(x)[:, 10:])
    assert m(dummy_input((16,))).shape == (32, 20)


def test_cached_generation_equals_plain_greedy_decoding():
    torch.manual_seed(0)
    m = create_model("gpt_2x64", **build_args((12,), 30)).eval()
    prompt = torch.randint(0, 30, (3, 4))
    fast = m.generate(prompt, 15, 0.0)   # crosses the context (12): cached, then a sliding window
    out = prompt
    for _ in range(15):
        out = torch.cat([out, m.next_token_logits(out[:, -12:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(fast, out)
    g = lambda: torch.Generator().manual_seed(3)   # noqa: E731
    assert torch.equal(m.generate(prompt, 6, 1.0, g()), m.generate(prompt, 6, 1.0, g()))


@pytest.mark.parametrize("config, field", [
    ({"dataset": "pydoc", "methods": "at"}, "methods[0]"),
    ({"dataset": "pydoc", "student": "cnn_tiny"}, "student"),
    ({"dataset": "digits", "student": "gpt_1x32"}, "student"),
    ({"dataset": "pydoc", "scheme": "dafl"}, "scheme"),
    ({"dataset": "digits", "scheme": "seqkd"}, "scheme"),
    ({"dataset": "pydoc", "scheme": "onpolicy", "methods": "none"}, "methods"),
    ({"dataset": "pydoc", "scheme": "onpolicy", "methods": "rkd"}, "methods[0]"),
    ({"dataset": "pydoc", "methods": "crd"}, "methods[0]"),    # one memory-bank row per window, not per token
    ({"dataset": "pydoc", "methods": "kd+rkd"}, "methods[1]"),  # cubic in the batch's token rows
    ({"dataset": "pydoc", "probe_epochs": [0, 1]}, "probe_epochs"),
])
def test_text_runs_refuse_what_needs_images(config, field):
    with pytest.raises(ConfigError) as e:
        resolve(config)
    assert e.value.field == field


def test_text_run_defaults_and_lm_methods_resolve():
    cfg = resolve({"dataset": "pydoc", "methods": "kd+rkl+gkd+minilm", "optimizer": "adamw"})
    assert (cfg.student, cfg.teacher, cfg.probe_epochs) == ("gpt_1x32", "gpt_4x128", [])
    assert cfg.lr == 3e-3   # the text recipe's AdamW rate
