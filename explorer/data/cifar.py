"""CIFAR-10/100 python-pickle batches, read with a restricted unpickler that can only rebuild numpy arrays
(a malicious file cannot run code), and a checksum-verified download."""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .raw import DatasetFormatError, DatasetNotFoundError, RawData, check_labels, raw_from_arrays


class UnsafePickleError(DatasetFormatError, pickle.UnpicklingError):
    """A pickle asked for a global outside the numpy-array allowlist; nothing from it was executed."""


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


def cifar_layout(num_classes: int):
    if num_classes == 10:
        return [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"
    if num_classes == 100:
        return ["train"], ["test"], "meta", "fine_labels", "fine_label_names"
    raise ValueError(f"CIFAR has 10 or 100 classes, not {num_classes}")


try:   # numpy >= 2 moved the module; original CIFAR files name numpy.core.multiarray, numpy 2 writes numpy._core
    from numpy._core.multiarray import _reconstruct as np_reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct as np_reconstruct

# Exactly the globals a pickled numpy array needs; resolved here, never imported from the pickle's names.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np_reconstruct,
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
    check_labels(y, n_classes, str(path))
    coarse = None
    if label_key == "fine_labels":
        c = d.get(b"coarse_labels", d.get("coarse_labels"))
        if c is not None and len(c) == len(y):
            coarse = np.asarray(c, dtype=np.int64)
    # row = 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order -> (N, 3, 32, 32)
    return data.reshape(-1, 3, 32, 32), y, coarse


def _find_cifar_dir(root: Path, num_classes: int) -> Path:
    train_files, test_files, meta, _, _ = cifar_layout(num_classes)
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
    train_files, test_files, meta_file, label_key, names_key = cifar_layout(num_classes)
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
    return raw_from_arrays(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], names, extras)


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

    cifar_layout(num_classes)
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
