"""Text datasets: a corpus read as characters, cut into fixed-length windows of next-token prediction.

A text dataset has `modality = "text"`. Its reader returns RawData whose x are int64 (N, T) token windows and y
the same windows shifted by one position (the next tokens), split by *position in the text*: the test split is
the corpus' last TEST_FRACTION, the validation split the part just before it (explorer/data/loader.py), and no
window crosses a boundary. The tokenizer is character-level: its vocabulary (the distinct characters, sorted)
is the dataset's classes and is kept with its meta (extras["vocab"]), so a token id is a class index.

    pydoc        the English prose of CPython's bundled documentation topics (data/text/, PSF licence): no download
    text-folder  your own .txt files in a folder (UTF-8, size-checked like image uploads)
    <text dataset>-bpe<N>   the same text in N byte-pair-encoding tokens (explorer/data/bpe.py), learnt on the
                 training part only; the merges are kept with the meta too (extras["merges"]): tokenizer_of
                 rebuilds the tokenizer anywhere. Listed: BPE_SIZES; any N up to bpe.MAX_TARGET by name.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import re
from pathlib import Path

import numpy as np
import torch

from ..resources import ROOT
from .bpe import BPETokenizer, check_characters
from .loader import VAL_FRACTION, text_val_windows
from .raw import DatasetFormatError, DatasetNotFoundError, RawData
from .registry import DATASETS, DatasetSpec, register_dataset

CONTEXT = 64                 # tokens per window: the models' context length (Dataset.shape = (CONTEXT,))
TEST_FRACTION = 0.1          # the corpus' last tenth; validation is the tenth before it (loader.VAL_FRACTION)
MAX_VOCAB = 256              # a folder's rarer characters share one unknown token
UNKNOWN = "\ufffd"
MAX_FILE_BYTES = 20 << 20    # one .txt file; as an uploaded image's limit (explorer/uploads.py)
MAX_TOTAL_BYTES = 256 << 20
MIN_CHARS = 4 * CONTEXT * 10
PYDOC = ROOT / "data" / "text" / "pydoc_topics.txt.gz"
BPE_SIZES = (256, 512)       # the BPE vocabularies the menus list (`pydoc-bpe256`, ...)


class CharTokenizer:
    """Characters <-> token ids over a fixed vocabulary (a string of distinct characters, sorted)."""

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.index = {ch: i for i, ch in enumerate(vocab)}
        self.unknown = self.index.get(UNKNOWN)

    @classmethod
    def fit(cls, text: str, max_vocab: int = MAX_VOCAB) -> "CharTokenizer":
        chars, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
        if len(chars) > max_vocab:   # keep the most frequent, the rest map to UNKNOWN
            chars = chars[np.argsort(-counts, kind="stable")[:max_vocab - 1]]
            return cls("".join(sorted({chr(c) for c in chars} | {UNKNOWN})))
        return cls("".join(chr(c) for c in chars))

    @property
    def tokens(self) -> tuple[str, ...]:
        """Each token's text (BPETokenizer's counterpart)."""
        return tuple(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        check_characters(text, self.index, self.unknown)
        return torch.tensor([self.index.get(ch, self.unknown) for ch in text], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def tokenizer_of(data) -> CharTokenizer | BPETokenizer:
    """The tokenizer of a text Dataset or RawData (its vocabulary is kept in extras["vocab"], a BPE's merges in
    extras["merges"]), or of such extras themselves."""
    extras = data if isinstance(data, dict) else data.extras
    if extras.get("merges") is not None:
        return BPETokenizer(extras["vocab"], extras["merges"], UNKNOWN)
    return CharTokenizer(extras["vocab"])


def windows(ids: torch.Tensor, context: int = CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of `context` tokens and their next tokens: x[i] = ids[iT:(i+1)T],
    y[i] = ids[iT+1:(i+1)T+1]; a tail shorter than a window is dropped."""
    n = (len(ids) - 1) // context
    x = ids[:n * context].reshape(n, context)
    y = ids[1:n * context + 1].reshape(n, context)
    return x.contiguous(), y.contiguous()


def raw_from_text(text: str, source: str, context: int = CONTEXT, tokenizer: CharTokenizer | None = None,
                  bpe: int | None = None) -> RawData:
    """RawData of a text: train = the first (1 - TEST_FRACTION) of it, test = the rest, each cut into windows;
    bpe: in that many BPE tokens (raw_from_text_bpe), else characters."""
    if len(text) < MIN_CHARS:
        raise DatasetFormatError(f"{source}: {len(text)} characters of text; a text dataset needs at least "
                                 f"{MIN_CHARS} (ten windows of {context} per split)")
    if bpe:
        return raw_from_text_bpe(text, source, bpe, context)
    tok = tokenizer or CharTokenizer.fit(text)
    ids = tok.encode(text)
    cut = int(len(ids) * (1 - TEST_FRACTION))
    train_x, train_y = windows(ids[:cut], context)
    test_x, test_y = windows(ids[cut:], context)
    return RawData(train_x, train_y, test_x, test_y, tuple(tok.vocab),
                   {"vocab": tok.vocab, "source": source, "chars": len(text), "context": context},
                   modality="text")


def raw_from_text_bpe(text: str, source: str, target: int, context: int = CONTEXT) -> RawData:
    """RawData of a text in `target` BPE tokens learnt on its training part only. The text is cut by character
    into training | validation | test (the loader's fractions), the merges are learnt on the first part, and each
    part is encoded and cut into windows on its own; the windows kept make the loader's validation windows (the
    training split's last text_val_windows) exactly the validation part's, so no merge has seen validation text
    (nor test). Characters the training part lacks read as the unknown token."""
    cut_test = int(len(text) * (1 - TEST_FRACTION))
    cut_val = int(cut_test * (1 - VAL_FRACTION))
    fit_text, val_text, test_text = text[:cut_val], text[cut_val:cut_test], text[cut_test:]
    base = "".join(sorted(set(CharTokenizer.fit(fit_text).vocab) | {UNKNOWN}))
    try:
        tok = BPETokenizer.fit(fit_text, target, base, UNKNOWN)
    except ValueError as e:
        raise DatasetFormatError(f"{source}: {e}; choose another -bpe size") from None
    fit_x, fit_y = windows(torch.from_numpy(tok.fitted), context)
    val_x, val_y = windows(tok.encode(val_text), context)
    test_x, test_y = windows(tok.encode(test_text), context)
    n_fit, n_val = _train_val_counts(len(fit_x), len(val_x))
    if n_fit < 1 or n_val < 1 or len(test_x) < 1:
        raise DatasetFormatError(f"{source}: {len(text)} characters make too few windows of {context} BPE tokens "
                                 "per split; use more text or the character-level dataset")
    return RawData(torch.cat([fit_x[:n_fit], val_x[:n_val]]), torch.cat([fit_y[:n_fit], val_y[:n_val]]),
                   test_x, test_y, tuple(tok.tokens),
                   {"vocab": tok.vocab, "merges": [list(m) for m in tok.merges], "source": source, "chars": len(text),
                    "context": context, "bpe_fit_chars": len(fit_text)}, modality="text")


def _train_val_counts(fit: int, val: int) -> tuple[int, int]:
    """The most windows (training, validation), at most (fit, val), for which the loader holds out exactly the
    validation ones: text_val_windows(training + validation) == validation."""
    for total in range(fit + val, 1, -1):
        n_val = text_val_windows(total)
        if n_val <= val and total - n_val <= fit:
            return total - n_val, n_val
    return 0, 0


def read_pydoc(root=None, image_size=None, bpe: int | None = None) -> RawData:
    if not PYDOC.is_file():
        raise DatasetNotFoundError(f"the bundled corpus {PYDOC} is missing; re-make it with "
                                   "scripts/make_text_corpus.py")
    with gzip.open(PYDOC, "rt", encoding="ascii") as f:
        return raw_from_text(f.read(), "CPython pydoc_data.topics (data/text/SOURCE.md)", bpe=bpe)


def read_text_folder(root=None, image_size=None, bpe: int | None = None) -> RawData:
    """Every .txt file under `root` (sorted by path, joined by blank lines): UTF-8 text only, each file at most
    MAX_FILE_BYTES and all of them MAX_TOTAL_BYTES; other files are skipped and counted in extras["skipped"]."""
    if root is None:
        raise FileNotFoundError("text-folder needs --data-root FOLDER holding .txt files")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"text-folder: {folder} is not a folder")
    parts, skipped, total = [], [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() != ".txt":
            skipped.append((str(path), "not a .txt file"))
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES or total + size > MAX_TOTAL_BYTES:
            skipped.append((str(path), f"over the size limit ({size} bytes)"))
            continue
        data = path.read_bytes()
        if b"\x00" in data:
            skipped.append((str(path), "binary (holds NUL bytes), not text"))
            continue
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            skipped.append((str(path), f"not UTF-8 text ({e.reason} at byte {e.start})"))
            continue
        total += size
    if not parts:
        raise DatasetNotFoundError(f"text-folder: no readable .txt file under {folder} ({len(skipped)} skipped)")
    raw = raw_from_text("\n\n".join(parts), f"text files under {folder}", bpe=bpe)
    raw.extras["skipped"] = skipped
    raw.extras["files"] = len(parts)
    return raw


_LM_RECIPE = dict(epochs=2, teacher_epochs=4, batch_size=64, lr=3e-3, optimizer="adamw", schedule="cosine",
                  weight_decay=0.01)
# the pydoc vocabulary: the corpus' 94 distinct ASCII characters (fixed by the embedded file)
_PYDOC_VOCAB = 94

register_dataset(DatasetSpec(
    "pydoc", "English prose of CPython's bundled documentation topics (465k characters), character tokens, "
    f"windows of {CONTEXT}: no download", read_pydoc, _PYDOC_VOCAB, (CONTEXT,), (0.0,), (1.0,), "none", 0,
    "gpt_4x128", "gpt_1x32", recipe=_LM_RECIPE, modality="text"))
register_dataset(DatasetSpec(
    "text-folder", "your own .txt files (UTF-8), character tokens: the last tenth is the test split",
    read_text_folder, None, (CONTEXT,), (0.0,), (1.0,), "none", 0, "gpt_4x128", "gpt_1x32", needs_root=True,
    recipe=_LM_RECIPE, modality="text"))


def bpe_spec(name: str) -> DatasetSpec | None:
    """The spec of `<text dataset>-bpe<N>`: the dataset's text in N BPE tokens (None for any other name)."""
    m = re.fullmatch(r"(.+)-bpe(\d+)", name)
    if not m or "-bpe" in m.group(1) or m.group(1) not in DATASETS.list():
        return None
    base, target = DATASETS.get(m.group(1)), int(m.group(2))
    if base.modality != "text":
        return None
    return dataclasses.replace(
        base, name=name, reader=functools.partial(base.reader, bpe=target),
        num_classes=target if base.num_classes is not None else None,
        description=base.description.replace("character tokens", f"{target} BPE tokens learnt on its training part"))


DATASETS.derive(bpe_spec)
for _base in ("pydoc", "text-folder"):
    for _n in BPE_SIZES:
        register_dataset(bpe_spec(f"{_base}-bpe{_n}"))
