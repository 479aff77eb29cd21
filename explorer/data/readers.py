"""Readers for real datasets. Every reader returns `RawData` (uint8 (N, C, H, W) images, int64 labels,
the official train/test splits, class names, extras); normalisation and splitting are the loader's job.

- `load_digits_data`   scikit-learn's bundled 8x8 handwritten digits (no files needed)
- `read_idx`/`write_idx`, `load_idx_dataset`   MNIST / Fashion-MNIST IDX files (plain or .gz)
- `load_cifar`/`write_cifar`/`download_cifar`  CIFAR-10/100 python-pickle batches, read with a
  restricted unpickler that can only rebuild numpy arrays (a malicious file cannot run code)
- `load_image_folder`  one subfolder of images per class
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .raw import RawData


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's folder or one of its files is missing (the message says what and how to fix it)."""


class DatasetFormatError(ValueError):
    """A dataset file exists but its contents are not what the format says."""


class UnsafePickleError(DatasetFormatError, pickle.UnpicklingError):
    """A pickle asked for a global outside the numpy-array allowlist; nothing from it was executed."""


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _raw(train_x, train_y, test_x, test_y, classes, extras=None) -> RawData:
    return RawData(torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)),
                   torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.uint8)),
                   torch.from_numpy(np.ascontiguousarray(test_y, dtype=np.int64)),
                   tuple(classes), dict(extras or {}))


def _check_labels(y: np.ndarray, n_classes: int, where: str) -> None:
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DatasetFormatError(f"{where}: labels span {int(y.min())}..{int(y.max())}, "
                                 f"expected 0..{n_classes - 1} for {n_classes} classes")


# --------------------------------------------------------------------------------------------- digits

def load_digits_data(seed: int = 0) -> RawData:
    """scikit-learn's 1,797 real 8x8 digits, values 0..16 scaled to 0..255, as 1x8x8 uint8.

    The split is a fixed stratified 80/20 one. `seed` is the *split* seed: leave it at 0 (do not pass the
    run seed), so the test set is the same in every run."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images.astype(np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return _raw(images[tr], y[tr], images[te], y[te], tuple(str(i) for i in range(10)),
                {"source": "sklearn.datasets.load_digits", "train_index": tr, "test_index": te})


# ------------------------------------------------------------------------------------------------ IDX

_IDX_CODES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_BY_KIND = {(v.kind, v.itemsize): k for k, v in _IDX_CODES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DatasetFormatError(f"{path}: looks gzip-compressed but cannot be decompressed ({e})") from e
    return data


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, detected from its content) into a native-endian array."""
    path = Path(path)
    data = _read_maybe_gz(path)
    if len(data) < 4:
        raise DatasetFormatError(f"{path}: not an IDX file: only {len(data)} bytes, the header needs 4")
    z0, z1, code, ndim = data[0], data[1], data[2], data[3]
    if z0 != 0 or z1 != 0:
        raise DatasetFormatError(f"{path}: not an IDX file: magic {data[:4].hex()} should start with 0000 "
                                 "(then a dtype code and the number of dimensions)")
    if code not in _IDX_CODES:
        raise DatasetFormatError(f"{path}: IDX magic {data[:4].hex()} has unknown dtype code 0x{code:02x} "
                                 f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_CODES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: IDX header says {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if any(d < 0 for d in dims):
        raise DatasetFormatError(f"{path}: IDX dimensions {dims} include a negative size")
    dtype = _IDX_CODES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetFormatError(f"{path}: IDX dims {dims} of {dtype.name} need {expected} data bytes, "
                                 f"the file has {len(data) - header} (truncated or corrupt)")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


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
            + np.ascontiguousarray(a, dtype=_IDX_CODES[code]).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(body)
    else:
        path.write_bytes(body)


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"   # Debian package dataset-fashion-mnist
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _idx_candidates(folder: Path, stem: str) -> list[Path]:
    """The names a file appears under: the original `train-images-idx3-ubyte`, its .gz (Debian's
    dataset-fashion-mnist ships these), and the dotted `train-images.idx3-ubyte` some mirrors use."""
    dotted = stem.replace("-idx", ".idx")
    names = [stem, stem + ".gz", dotted, dotted + ".gz"]
    return [folder / n for n in names]


def _idx_fix_hint(classes) -> str:
    hint = "pass --data-root FOLDER holding the four IDX files (plain or .gz)"
    if tuple(classes) == FASHION_MNIST_CLASSES:
        hint = ("install Debian's package with `apt-get install dataset-fashion-mnist` (files land in "
                f"{DEFAULT_FASHION_MNIST_ROOT}), or " + hint)
    return hint


def load_idx_dataset(root, classes: tuple[str, ...]) -> RawData:
    """MNIST / Fashion-MNIST layout: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte in `root` (or `root/raw`, torchvision's layout), each optionally .gz."""
    root = Path(root).expanduser()
    looked_for = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    if not root.is_dir():
        raise DatasetNotFoundError(f"IDX dataset folder {root} does not exist (it should hold {looked_for}); "
                                   f"{_idx_fix_hint(classes)}")
    folders = [root] + ([root / "raw"] if (root / "raw").is_dir() else [])
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        hit = next((p for f in folders for p in _idx_candidates(f, stem) if p.is_file()), None)
        if hit is None:
            missing.append(stem)
        else:
            found[key] = hit
    if missing:
        raise DatasetNotFoundError(f"IDX dataset folder {root} lacks {', '.join(f'{m}[.gz]' for m in missing)} "
                                   f"(looked for {looked_for}); {_idx_fix_hint(classes)}")
    arrays = {k: read_idx(p) for k, p in found.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        px, py = found[f"{split}_x"], found[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 3:
            raise DatasetFormatError(f"{px}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DatasetFormatError(f"{py}: expected 1-D integer labels, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise DatasetFormatError(f"{px} has {len(x)} images but {py} has {len(y)} labels")
        _check_labels(y, len(classes), str(py))
    return _raw(arrays["train_x"][:, None], arrays["train_y"], arrays["test_x"][:, None], arrays["test_y"],
                classes, {"source": str(root), "files": {k: str(p) for k, p in found.items()}})


# ---------------------------------------------------------------------------------------------- CIFAR

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
turtle wardrobe whale willow_tree wolf woman worm""".split())
assert len(CIFAR100_CLASSES) == 100 and len(set(CIFAR100_CLASSES)) == 100
CIFAR_DIRS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}
CIFAR_URLS = {10: "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              100: "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
CIFAR_MD5 = {10: "c58f30108f718f92721af3b95e74349a", 100: "eb9058c3a382ffc7106e4002c42a8d85"}


def _cifar_layout(num_classes: int):
    if num_classes == 10:
        return [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"
    if num_classes == 100:
        return ["train"], ["test"], "meta", "fine_labels", "fine_label_names"
    raise ValueError(f"CIFAR has 10 or 100 classes, not {num_classes}")


try:   # numpy >= 2 moved the module; original CIFAR files name numpy.core.multiarray, numpy 2 writes numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

# Exactly the globals a pickled numpy array needs; resolved here, never imported from the pickle's names.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds only builtin containers/scalars and numpy arrays: every other global
    (os.system, builtins.eval, subprocess.*, ...) is refused before anything is called."""

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module, name):
        obj = _PICKLE_ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(f"{self.source}: refused to load global {module}.{name}: CIFAR files only "
                                    "hold dicts, lists, bytes, strings, ints and numpy arrays; this file is not a "
                                    "genuine CIFAR batch (possibly malicious), delete it and re-download")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r}")


def _safe_unpickle(path: Path):
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as e:   # truncated / garbage: report as a format problem, not a crash
            raise DatasetFormatError(f"{path}: cannot be read as a CIFAR pickle ({type(e).__name__}: {e})") from e


def _get(d: dict, key: str, path: Path):
    if not isinstance(d, dict):
        raise DatasetFormatError(f"{path}: expected a dict at the top level, got {type(d).__name__}")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DatasetFormatError(f"{path}: no {key!r} entry (has {sorted(str(k) for k in d)[:8]})")


def _text(s) -> str:
    return s.decode("utf-8", "replace") if isinstance(s, (bytes, bytearray)) else str(s)


def _read_cifar_batch(path: Path, label_key: str, n_classes: int):
    d = _safe_unpickle(path)
    data = _get(d, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: 'data' should be uint8 (N, 3072), got {desc}")
    labels = _get(d, label_key, path)
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetFormatError(f"{path}: {label_key!r} is not a list of ints") from e
    if y.shape != (len(data),):
        raise DatasetFormatError(f"{path}: {len(data)} images but {label_key!r} has shape {y.shape}")
    _check_labels(y, n_classes, str(path))
    coarse = None
    if label_key == "fine_labels":
        c = d.get(b"coarse_labels", d.get("coarse_labels"))
        if c is not None and len(c) == len(y):
            coarse = np.asarray(c, dtype=np.int64)
    # row = 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order -> (N, 3, 32, 32)
    return data.reshape(-1, 3, 32, 32), y, coarse


def _find_cifar_dir(root: Path, num_classes: int) -> Path:
    train_files, test_files, meta, _, _ = _cifar_layout(num_classes)
    sub = CIFAR_DIRS[num_classes]
    needed = train_files + test_files + [meta]
    for cand in (root, root / sub):
        if cand.is_dir() and all((cand / f).is_file() for f in needed):
            return cand
    archive = root / Path(CIFAR_URLS[num_classes]).name
    hint = (f"found {archive} but it is not extracted: run `tar xzf {archive} -C {root}`" if archive.is_file() else
            f"download it once with download_cifar('{root}', {num_classes}) (or `kd-explorer download "
            f"cifar{num_classes} {root}`), or pass --data-root pointing at the extracted {sub} folder")
    where = root / sub if (root / sub).is_dir() else root
    missing = [f for f in needed if not (where / f).is_file()] if where.is_dir() else needed
    raise DatasetNotFoundError(f"CIFAR-{num_classes} not found in {root} or {root / sub}: looked for "
                               f"{', '.join(needed)} (missing in {where}: {', '.join(missing)}); {hint}")


def load_cifar(root, num_classes: int) -> RawData:
    """CIFAR-10/100 from the official python-pickle batches; `root` is the extracted folder
    (cifar-10-batches-py / cifar-100-python) or its parent. CIFAR-100 uses the fine labels."""
    train_files, test_files, meta_file, label_key, names_key = _cifar_layout(num_classes)
    folder = _find_cifar_dir(Path(root).expanduser(), num_classes)
    meta_path = folder / meta_file
    names = [_text(n) for n in _get(_safe_unpickle(meta_path), names_key, meta_path)]
    if len(names) != num_classes:
        raise DatasetFormatError(f"{meta_path}: {names_key!r} has {len(names)} names, expected {num_classes}")
    parts = {}
    for split, files in (("train", train_files), ("test", test_files)):
        batches = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files]
        parts[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]),
                        [b[2] for b in batches])
    extras = {"source": str(folder)}
    if num_classes == 100:
        meta = _safe_unpickle(meta_path)
        coarse_names = meta.get(b"coarse_label_names", meta.get("coarse_label_names"))
        tr_c, te_c = parts["train"][2], parts["test"][2]
        if coarse_names is not None and all(c is not None for c in tr_c + te_c):
            extras.update(coarse_classes=tuple(_text(n) for n in coarse_names),
                          train_coarse_y=torch.from_numpy(np.concatenate(tr_c)),
                          test_coarse_y=torch.from_numpy(np.concatenate(te_c)))
    return _raw(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], names, extras)


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
        if obj is _np_reconstruct:   # name it as numpy 1.x (and the original files) do
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)
    dispatch[type(_np_reconstruct)] = save_global


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
    root/cifar-100-python); images (N, 3, 32, 32) or rows (N, 3072) uint8. Returns the folder. For tests."""
    train_files, test_files, meta_file, label_key, names_key = _cifar_layout(num_classes)
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


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    dest = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()):
            raise DatasetFormatError(f"archive member {m.name!r} is not a plain file or folder; refusing to extract")
        if os.path.isabs(m.name) or (target != dest and dest not in target.parents):
            raise DatasetFormatError(f"archive member {m.name!r} would land outside {dest}; refusing to extract")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:  # pragma: no cover - old Pythons without extraction filters; members were checked above
        tar.extractall(dest)


def download_cifar(root, num_classes: int) -> Path:
    """Download and extract the official CIFAR-10/100 python archive into `root` (checksum-verified,
    extraction refuses links and paths escaping `root`). Returns the extracted folder. Tests never call it."""
    import urllib.request

    _cifar_layout(num_classes)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    url = CIFAR_URLS[num_classes]
    archive = root / Path(url).name
    if not archive.is_file():
        tmp = archive.with_suffix(archive.suffix + ".part")
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        tmp.replace(archive)
    md5 = hashlib.md5()
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
    if md5.hexdigest() != CIFAR_MD5[num_classes]:
        raise DatasetFormatError(f"{archive}: md5 {md5.hexdigest()} != official {CIFAR_MD5[num_classes]}; "
                                 "delete it and download again")
    with tarfile.open(archive, "r:gz") as tar:
        _safe_extract(tar, root)
    return _find_cifar_dir(root, num_classes)


# --------------------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _sanitise(name: str, fallback: str) -> str:
    s = re.sub(r"[^\w\-. ]+", "_", name, flags=re.UNICODE)
    s = re.sub(r"\s+", " ", s).strip(" ._")[:64]
    return s or fallback


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _load_image(path: Path, size: int, max_file_bytes: int):
    """(uint8 (3, size, size) array, None) or (None, reason)."""
    from PIL import Image, ImageOps

    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None, f"not an image extension ({path.suffix or 'none'})"
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        return None, f"cannot stat: {e}"
    if nbytes > max_file_bytes:
        return None, f"file too large ({nbytes} bytes > {max_file_bytes})"
    if nbytes == 0:
        return None, "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)   # palette-transparency notes etc.
            with Image.open(path) as im:
                im.load()
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:   # bad EXIF: keep the image as stored
                    pass
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    im = Image.new("RGB", rgba.size, (0, 0, 0))
                    im.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    im = im.convert("RGB")
                im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy(), None
    except Exception as e:   # corrupt, truncated, unsupported, decompression bomb
        return None, f"unreadable image ({type(e).__name__}: {e})"


def load_image_folder(root, image_size: int, max_images: int = 50_000,
                      max_file_bytes: int = 20_000_000) -> RawData:
    """Images in one subfolder per class (png/jpg/jpeg/bmp/gif/webp, searched recursively), converted to RGB
    and resized to image_size x image_size (bilinear). Uses root/train and root/test when both exist, else a
    fixed stratified 80/20 split (seed 0). Unreadable/non-image files are skipped: extras["skipped"] lists
    (path, reason). At most `max_images` files are read, taken round-robin over classes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist: pass --data-root FOLDER holding one "
                                   "subfolder of images per class (or train/ and test/ with such subfolders)")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    splits = {"train": root / "train", "test": root / "test"} if presplit else {"all": root}
    folders = [d.name for d in _class_dirs(splits["train" if presplit else "all"])]
    if not folders:
        raise DatasetFormatError(f"{splits['train' if presplit else 'all']} has no class subfolders: put the "
                                 "images of each class in their own subfolder")
    if presplit:
        extra = sorted({d.name for d in _class_dirs(splits["test"])} - set(folders))
        if extra:
            raise DatasetFormatError(f"{root / 'test'} has class folders missing from {root / 'train'}: {extra}")

    # candidate files per (split, class), capped at max_images round-robin over classes for balance
    cand = {(s, c): _list_files(p / folders[c]) if (p / folders[c]).is_dir() else []
            for s, p in splits.items() for c in range(len(folders))}
    total = sum(len(v) for v in cand.values())
    if total > max_images:
        keys, taken, pos = list(cand), {k: [] for k in cand}, 0
        while pos < max_images:
            progressed = False
            for k in keys:
                i = len(taken[k])
                if i < len(cand[k]) and pos < max_images:
                    taken[k].append(cand[k][i])
                    pos += 1
                    progressed = True
            if not progressed:
                break
        cand = taken

    skipped: list[tuple[str, str]] = []
    loaded: dict[tuple[str, int], list[tuple[np.ndarray, str]]] = {}
    for key, files in cand.items():
        ok = []
        for f in files:
            img, reason = _load_image(f, image_size, max_file_bytes)
            if img is None:
                skipped.append((str(f), reason))
            else:
                ok.append((img, str(f)))
        loaded[key] = ok

    n_ok = sum(len(v) for v in loaded.values())
    if n_ok == 0:
        raise DatasetFormatError(f"no valid image found under {root} ({len(skipped)} files skipped, e.g. "
                                 f"{skipped[:3]}); supported: {', '.join(IMAGE_EXTENSIONS)}")
    first_split = "train" if presplit else "all"
    empty = [folders[c] for c in range(len(folders)) if not loaded[(first_split, c)]]
    if empty:
        raise DatasetFormatError(f"class folder(s) {empty} under {splits[first_split]} have no valid image "
                                 "(remove them or add images)")

    def stack(items):
        xs = np.stack([x for x, _ in items]) if items else np.zeros((0, 3, image_size, image_size), np.uint8)
        return xs, [p for _, p in items]

    parts = {"train": ([], []), "test": ([], [])}
    rng = np.random.default_rng(0)
    for c in range(len(folders)):
        if presplit:
            groups = {"train": loaded[("train", c)], "test": loaded[("test", c)]}
        else:
            items = loaded[("all", c)]
            order = rng.permutation(len(items))
            n_test = 0 if len(items) < 2 else max(1, int(round(0.2 * len(items))))
            te = set(order[:n_test].tolist())
            groups = {"train": [it for i, it in enumerate(items) if i not in te],
                      "test": [it for i, it in enumerate(items) if i in te]}
        for split, items in groups.items():
            parts[split][0].extend(items)
            parts[split][1].extend([c] * len(items))

    (trx, trp), (tex, tep) = stack(parts["train"][0]), stack(parts["test"][0])
    used, classes = set(), []
    for i, name in enumerate(folders):
        s = base = _sanitise(name, f"class_{i}")
        k = 2
        while s in used:
            s, k = f"{base}_{k}", k + 1
        used.add(s)
        classes.append(s)
    extras = {"source": str(root), "skipped": skipped, "train_files": trp, "test_files": tep,
              "class_folders": tuple(folders), "presplit": presplit,
              "not_read_over_limit": max(0, total - max_images)}
    return _raw(trx, np.asarray(parts["train"][1], np.int64), tex, np.asarray(parts["test"][1], np.int64),
                classes, extras)
