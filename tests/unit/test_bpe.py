"""Issue 16, item 1: the byte-pair-encoding option of the text datasets (explorer/data/bpe.py, `<dataset>-bpe<N>`):
merges checked by hand, the official tie rule, exact round trips, determinism, merges learnt on the training part
only (never validation or test text), and the tokenizer rebuilt from the dataset's meta."""
import gzip
import re

import numpy as np
import pytest
import torch

from explorer.data import get_dataset_spec, list_datasets, load_dataset
from explorer.data.bpe import BPETokenizer
from explorer.data.loader import VAL_FRACTION, text_val_windows
from explorer.data.raw import DatasetFormatError
from explorer.data.text import PYDOC, TEST_FRACTION, UNKNOWN, CharTokenizer, raw_from_text, tokenizer_of


@pytest.fixture(scope="module")
def corpus() -> str:
    with gzip.open(PYDOC, "rt", encoding="ascii") as f:
        return f.read()[:60_000]


def test_first_merges_of_aaabdaaabac_by_hand():
    # pairs (overlapping, as subword-nmt counts them): aa 4, ab 2, bd 1, da 1, ba 1, ac 1 -> merge "aa";
    # then aa|a|b|d|aa|a|b|a|c: (aa, a) 2 and (a, b) 2 tie; the official max(count, (left, right)) takes
    # ("aa", "a") > ("a", "b") -> "aaa"; then aaa|b|d|aaa|b|a|c: (aaa, b) 2 is the only pair seen twice.
    tok = BPETokenizer.fit("aaabdaaabac", 8, "abcd")
    assert [tok.tokens[left] + tok.tokens[right] for left, right in tok.merges] == ["aa", "aaa", "aaab"]
    assert len(tok) == 7                       # no pair occurs twice any more: subword-nmt's --min-frequency 2
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"
    assert [tok.tokens[i] for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c"]
    # merges apply in the order learnt: aa|aa|a (left to right, no overlap), then (aa, a) -> aa|aaa
    assert [tok.tokens[i] for i in tok.encode("aaaaa")] == ["aa", "aaa"]


def test_a_run_of_one_symbol_merges_left_to_right_without_overlap():
    tok = BPETokenizer.fit("aaaa aaaa aaa", 3, "a ")
    assert tok.tokens[2] == "aa" and [tok.tokens[i] for i in tok.encode("aaa aaaa")] == ["aa", "a", " ", "aa", "aa"]


def test_no_merge_crosses_a_word_and_whitespace_ends_a_word(corpus):
    tok = BPETokenizer.fit(corpus, 300, "".join(sorted(set(corpus))))
    assert len(tok) == 300
    crossing = [t for t in tok.tokens if not re.fullmatch(r"\S*\s*", t)]
    assert not crossing, crossing
    assert any(t.endswith(" ") and len(t) > 2 for t in tok.tokens)   # word-final subwords, as "est</w>"


def test_round_trip_determinism_and_encode_equals_what_training_learnt(corpus):
    base = "".join(sorted(set(corpus)))
    a, b = BPETokenizer.fit(corpus, 256, base), BPETokenizer.fit(corpus, 256, base)
    assert a.merges == b.merges and a.tokens == b.tokens
    assert np.array_equal(a.encode(corpus).numpy(), a.fitted)
    assert a.decode(a.encode(corpus)) == corpus
    other = "Unseen text: the merges still apply, and every character is in the vocabulary.\n   x"
    assert a.decode(a.encode(other)) == other
    assert len(a.encode(corpus)) < 0.7 * len(corpus)                    # it compresses
    rebuilt = BPETokenizer(a.vocab, [list(m) for m in a.merges])         # as tokenizer_of rebuilds it
    assert rebuilt.tokens == a.tokens and torch.equal(rebuilt.encode(other), a.encode(other))


def test_characters_outside_the_vocabulary():
    tok = BPETokenizer.fit("abab abab", 5, "ab " + UNKNOWN, UNKNOWN)
    assert tok.decode(tok.encode("abz")) == "ab" + UNKNOWN
    with pytest.raises(ValueError, match="outside the vocabulary"):
        BPETokenizer.fit("abab abab", 5, "ab ").encode("abz")
    with pytest.raises(ValueError, match="larger than"):
        BPETokenizer.fit("abab", 3, "ab ")


def test_the_merges_never_read_validation_or_test_text(corpus):
    cut_val = int(int(len(corpus) * (1 - TEST_FRACTION)) * (1 - VAL_FRACTION))
    tail = "zqx zqx zqxzqx " * ((len(corpus) - cut_val) // 15 + 1)     # a pattern only the held-out text has
    a = raw_from_text(corpus, "a", bpe=300)
    b = raw_from_text(corpus[:cut_val] + tail[:len(corpus) - cut_val], "b", bpe=300)
    assert a.extras["merges"] == b.extras["merges"] and a.extras["bpe_fit_chars"] == cut_val
    assert not any("zq" in t or "qx" in t for t in b.classes)
    # the loader's validation windows are exactly the held-out part's: they decode to the text after the cut
    tok = tokenizer_of(b)
    n_val = text_val_windows(len(b.train_x))
    fit_text = tok.decode(b.train_x[:-n_val].reshape(-1))
    assert corpus[:cut_val].startswith(fit_text) and "zq" not in fit_text
    assert tok.decode(b.train_x[-n_val:].reshape(-1)).startswith("zqx zqx")
    assert tok.decode(b.test_x[0]) in tail and torch.equal(b.train_x[:, 1:], b.train_y[:, :-1])


def test_pydoc_bpe_dataset_reads_and_decodes_from_its_meta():
    assert {"pydoc-bpe256", "pydoc-bpe512", "text-folder-bpe256", "text-folder-bpe512"} <= set(list_datasets())
    spec = get_dataset_spec("pydoc-bpe256")
    assert spec.modality == "text" and spec.num_classes == 256 and spec.default_teacher == "gpt_4x128"
    assert get_dataset_spec("pydoc-bpe300").num_classes == 300          # any size by name, never listed
    assert "pydoc-bpe300" not in list_datasets()
    for name in ("digits-bpe256", "pydoc-bpe256-bpe300", "pydoc-bpe"):
        with pytest.raises(KeyError):
            get_dataset_spec(name)
    data = load_dataset("pydoc-bpe256")
    char = load_dataset("pydoc")
    assert data.num_classes == 256 and data.shape == char.shape and len(data.train) < len(char.train)
    tok = tokenizer_of(data)
    assert tok.tokens == data.classes and len(tok) == 256
    text = tok.decode(data.test.x[0])
    assert text == CharTokenizer(char.extras["vocab"]).decode(CharTokenizer(char.extras["vocab"]).encode(text))
    assert torch.equal(tok.encode(text), data.test.x[0])


def test_a_bpe_size_that_cannot_be_learnt_says_so():
    with pytest.raises(DatasetFormatError, match="-bpe size"):
        get_dataset_spec("pydoc-bpe50").reader()
    with pytest.raises(DatasetFormatError, match="-bpe size"):
        get_dataset_spec("pydoc-bpe5000").reader()
