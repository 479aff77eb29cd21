"""Writers of the dataset formats the readers take, for tests only: tiny IDX and CIFAR files made on the fly.

They write the real formats (CIFAR as Python 2 pickles, as the original files were written), so the
readers are tested on what the real files hold. The package itself never writes these formats.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from explorer.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR_DIRS, cifar_layout, np_reconstruct
from explorer.data.idx import IDX_CODES
from explorer.data.raw import DatasetFormatError

_IDX_BY_KIND = {(v.kind, v.itemsize): k for k, v in IDX_CODES.items()}


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def write_idx(path, array) -> None:
    """Write an array in IDX format; gzip-compressed when the path ends with .gz."""
    path = Path(path)
    a = _as_numpy(array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    code = _IDX_BY_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise DatasetFormatError(f"write_idx: dtype {a.dtype} has no IDX code "
                                 "(IDX holds uint8, int8, int16, int32, float32, float64)")
    if a.ndim > 255 or any(d >= 2 ** 31 for d in a.shape):
        raise DatasetFormatError(f"write_idx: shape {a.shape} does not fit the IDX header")
    body = (bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape)
            + np.ascontiguousarray(a, dtype=IDX_CODES[code]).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(body)
    else:
        path.write_bytes(body)


class _Py2StylePickler(pickle._Pickler):
    """Protocol-2 pickler that writes bytes as Python 2 `str` opcodes (SHORT_BINSTRING/BINSTRING), as the
    original CIFAR files (written by Python 2) do. The stock protocol-2 pickler would instead emit
    `_codecs.encode(...)` calls, a global the restricted reader rightly refuses."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_bytes_py2(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)
    dispatch[bytes] = _save_bytes_py2

    def save_global(self, obj, name=None):
        if obj is np_reconstruct:   # name it as numpy 1.x (and the original files) do
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)
    dispatch[type(np_reconstruct)] = save_global


def _dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _cifar_rows(x, what: str) -> np.ndarray:
    a = _as_numpy(x)
    if a.dtype != np.uint8:
        raise ValueError(f"write_cifar: {what} must be uint8, got {a.dtype}")
    if a.ndim == 4 and a.shape[1:] == (3, 32, 32):
        a = a.reshape(len(a), 3072)
    if a.ndim != 2 or a.shape[1] != 3072:
        raise ValueError(f"write_cifar: {what} must be (N, 3, 32, 32) or (N, 3072), got {a.shape}")
    return np.ascontiguousarray(a)


def write_cifar(root, num_classes, train_x, train_y, test_x, test_y, *,
                classes: Sequence[str] | None = None) -> Path:
    """Write CIFAR-10/100 in the original python-pickle format under root/cifar-10-batches-py (or
    root/cifar-100-python); images (N, 3, 32, 32) or rows (N, 3072) uint8. Returns the folder."""
    train_files, test_files, meta_file, label_key, names_key = cifar_layout(num_classes)
    names = tuple(classes) if classes is not None else (CIFAR10_CLASSES if num_classes == 10 else CIFAR100_CLASSES)
    if len(names) != num_classes:
        raise ValueError(f"write_cifar: {len(names)} class names for {num_classes} classes")
    folder = Path(root) / CIFAR_DIRS[num_classes]
    folder.mkdir(parents=True, exist_ok=True)
    for split, files, x, y in (("train", train_files, train_x, train_y), ("test", test_files, test_x, test_y)):
        rows, labels = _cifar_rows(x, f"{split}_x"), _as_numpy(y).astype(np.int64).reshape(-1)
        if len(rows) != len(labels):
            raise ValueError(f"write_cifar: {split} has {len(rows)} images but {len(labels)} labels")
        for i, (fname, chunk) in enumerate(zip(files, np.array_split(np.arange(len(rows)), len(files)))):
            batch_label = (f"training batch {i + 1} of {len(files)}" if split == "train" else "testing batch 1 of 1")
            d = {b"batch_label": batch_label.encode(), label_key.encode(): [int(v) for v in labels[chunk]],
                 b"data": rows[chunk], b"filenames": [f"img_{split}_{j:06d}.png".encode() for j in chunk]}
            if num_classes == 100:
                d[b"coarse_labels"] = [0 for _ in chunk]
            _dump_py2(d, folder / fname)
    meta = {names_key.encode(): [n.encode() for n in names]}
    if num_classes == 10:
        meta.update({b"num_cases_per_batch": 10000, b"num_vis": 3072})
    else:
        meta[b"coarse_label_names"] = [b"all"]
    _dump_py2(meta, folder / meta_file)
    return folder
