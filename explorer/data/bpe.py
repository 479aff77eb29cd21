"""Byte-pair encoding (Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with Subword Units",
ACL 2016, Algorithm 1; official code: rsennrich/subword-nmt, learn_bpe.py / apply_bpe.py).

Starting from the character vocabulary, repeatedly merge the most frequent pair of adjacent symbols (counted over
every word of the training text, overlapping pairs counted as the official get_pair_statistics does) into one new
symbol, until the vocabulary holds `target` symbols (subword-nmt's --total-symbols) or no pair occurs twice
(its --min-frequency 2). Ties go to the lexicographically greatest (left, right) pair of symbol strings, the
official `max(stats, key=lambda x: (stats[x], x))`. A merge replaces occurrences left to right without overlap,
as the official regex replace does; two merges that spell the same string share one symbol, as the official
string-keyed symbols do. Encoding applies the merges in the order they were learnt (the official apply_bpe
merges the lowest-ranked pair first, which is the same thing).

Where this differs from the paper, for a language model over raw text: a word is a run of non-space characters
*with the whitespace after it* (`\\S+\\s*`), so that whitespace plays the part of the paper's end-of-word marker
</w> and decoding rebuilds the text exactly (the paper splits tokenised text at single spaces and loses the rest).
No merge crosses a word. As in the official code, pairs are counted over the distinct words weighted by how often
each occurs, here vectorised (numpy, one bincount per merge), and a text is encoded one distinct word at a time.
"""
from __future__ import annotations

import re

import numpy as np
import torch

WORD = re.compile(r"\S+\s*|\s+")   # a word and its trailing whitespace (leading whitespace of the text alone)
MAX_TARGET = 1024                  # pair codes are counted in a (target x target) bincount


def _words(text: str, index: dict[str, int], unknown: int | None):
    """The text's distinct words (the official code's word types), as one sequence of base-symbol ids with, for
    each symbol, the number of its distinct word; and for each word of the text in order, that number."""
    types: dict[str, int] = {}
    order = np.fromiter((types.setdefault(w, len(types)) for w in WORD.findall(text)), dtype=np.int64)
    chars = "".join(types)   # the distinct words in order of first use
    ids = np.fromiter((index.get(ch, unknown) if unknown is not None else index[ch] for ch in chars),
                      dtype=np.int64, count=len(chars))
    word = np.repeat(np.arange(len(types)), np.fromiter(map(len, types), dtype=np.int64, count=len(types)))
    return ids, word, order


def _text_ids(ids: np.ndarray, word: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The encoded distinct words put back in the text's order of words."""
    pieces = np.split(ids, np.flatnonzero(np.diff(word)) + 1) if len(ids) else []
    return np.concatenate([pieces[i] for i in order]) if len(order) else np.zeros(0, dtype=np.int64)


def _merge(ids: np.ndarray, word: np.ndarray, left: int, right: int, new: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace every (left, right) inside one word by `new`, left to right without overlap."""
    at = np.flatnonzero((ids[:-1] == left) & (ids[1:] == right) & (word[:-1] == word[1:]))
    if len(at) == 0:
        return ids, word
    if left == right:   # in a run "x x x" only the first of each overlapping pair is replaced
        j = np.arange(len(at))
        run_start = np.maximum.accumulate(np.where(np.r_[True, at[1:] != at[:-1] + 1], j, 0))
        at = at[(j - run_start) % 2 == 0]
    ids = ids.copy()
    ids[at] = new
    keep = np.ones(len(ids), dtype=bool)
    keep[at + 1] = False
    return ids[keep], word[keep]


def check_characters(text: str, index: dict, unknown: int | None) -> None:
    """Both tokenizers' rule: with no unknown token, a character outside the vocabulary is refused, naming it."""
    if unknown is None:
        missing = set(text) - index.keys()
        if missing:
            raise ValueError(f"characters outside the vocabulary: {''.join(sorted(missing))[:20]!r}")


class BPETokenizer:
    """Text <-> token ids: base characters `vocab` (sorted, as CharTokenizer's) plus learnt merges.

    tokens[i] is token i's text; merges[k] = (left id, right id) in the order learnt (the k-th merge makes the
    token of their joined text: a new id, or the existing one when another merge spelt the same string).
    `unknown`: the character of `vocab` that characters outside it read as (None: they are refused)."""

    def __init__(self, vocab: str, merges, unknown: str | None = None):
        self.vocab = vocab
        self.index = {ch: i for i, ch in enumerate(vocab)}
        self.unknown = self.index.get(unknown) if unknown is not None else None
        self.merges: list[tuple[int, int]] = []
        self._tokens: list[str] = list(vocab)
        self._ids = {t: i for i, t in enumerate(self._tokens)}
        self._made: list[int] = []   # the token each merge makes
        for left, right in merges:
            self._add(int(left), int(right))

    def _add(self, left: int, right: int) -> int:
        text = self._tokens[left] + self._tokens[right]
        if text not in self._ids:
            self._ids[text] = len(self._tokens)
            self._tokens.append(text)
        self.merges.append((left, right))
        self._made.append(self._ids[text])
        return self._ids[text]

    @classmethod
    def fit(cls, text: str, target: int, base: str, unknown: str | None = None) -> "BPETokenizer":
        """Learn merges on `text` (the training text only) until `target` tokens, from the characters `base`."""
        if not len(base) < target <= MAX_TARGET:
            raise ValueError(f"a BPE vocabulary of {target} tokens: it must be larger than the {len(base)} characters "
                             f"it starts from and at most {MAX_TARGET}")
        tok = cls(base, [], unknown)
        ids, word, order = _words(text, tok.index, tok.unknown)
        freq = np.bincount(order, minlength=int(word[-1]) + 1 if len(word) else 0)   # how often each word occurs
        while len(tok._tokens) < target and len(ids) > 1:
            same = word[:-1] == word[1:]
            counts = np.bincount(ids[:-1][same] * target + ids[1:][same], weights=freq[word[:-1][same]], minlength=1)
            best = int(counts.max())
            if best < 2:   # subword-nmt's --min-frequency 2
                break
            tied = [divmod(int(c), target) for c in np.flatnonzero(counts == best)]
            left, right = max(tied, key=lambda p: (tok._tokens[p[0]], tok._tokens[p[1]]))
            ids, word = _merge(ids, word, left, right, tok._add(left, right))
        tok.fitted = _text_ids(ids, word, order)   # the training text's encoding, as learnt (= encode(text))
        return tok

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def encode(self, text: str) -> torch.Tensor:
        check_characters(text, self.index, self.unknown)
        ids, word, order = _words(text, self.index, self.unknown)
        for (left, right), new in zip(self.merges, self._made):
            ids, word = _merge(ids, word, left, right, new)
        return torch.from_numpy(_text_ids(ids, word, order))

    def decode(self, ids) -> str:
        return "".join(self._tokens[int(i)] for i in ids)
