"""MNIST / Fashion-MNIST IDX files (plain or .gz, detected from the content)."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..bounds import GZIP_MAX_RATIO, IDX_MAX_BYTES, expansion_problem
from .raw import DatasetFormatError, DatasetNotFoundError, RawData, check_labels, raw_from_arrays

# the header's third byte -> the (big-endian) dtype of the data
IDX_CODES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, max_bytes: int = IDX_MAX_BYTES, max_ratio: float = GZIP_MAX_RATIO) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, detected from its content) into a native-endian array.

    The header is read and checked first; a .gz is then streamed into an array of exactly the size it
    declares, so a file never costs more memory than its header admits: at most `max_bytes`, and for a
    .gz at most `max_ratio` times the file's size (above bounds.RATIO_FLOOR)."""
    path = Path(path)
    packed = path.stat().st_size
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            if not gz:
                return _read_idx_stream(f, path, packed, None, max_bytes, max_ratio)
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                return _read_idx_stream(g, path, packed, packed, max_bytes, max_ratio)
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise
            raise DatasetFormatError(f"{path}: looks gzip-compressed but cannot be decompressed ({e})") from None


def _read_idx_stream(f, path: Path, size: int, gz_size: int | None, max_bytes: int, max_ratio: float) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise DatasetFormatError(f"{path}: not an IDX file: only {len(head)} bytes, the header needs 4")
    z0, z1, code, ndim = head[0], head[1], head[2], head[3]
    if z0 != 0 or z1 != 0:
        raise DatasetFormatError(f"{path}: not an IDX file: magic {head.hex()} should start with 0000 "
                                 "(then a dtype code and the number of dimensions)")
    if code not in IDX_CODES:
        raise DatasetFormatError(f"{path}: IDX magic {head.hex()} has unknown dtype code 0x{code:02x} "
                                 f"(known: {', '.join(f'0x{c:02x}' for c in IDX_CODES)})")
    header = 4 + 4 * ndim
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DatasetFormatError(f"{path}: IDX header says {ndim} dimensions but the file ends after "
                                 f"{4 + len(raw_dims)} bytes")
    dims = struct.unpack(f">{ndim}i", raw_dims)
    if any(d < 0 for d in dims):
        raise DatasetFormatError(f"{path}: IDX dimensions {dims} include a negative size")
    dtype = IDX_CODES[code]
    expected = math.prod(dims) * dtype.itemsize
    if gz_size is None and size - header != expected:   # a plain file: its size says it all
        raise DatasetFormatError(f"{path}: IDX dims {dims} of {dtype.name} need {expected} data bytes, "
                                 f"the file has {size - header} (truncated or corrupt)")
    problem = expansion_problem(expected, gz_size if gz_size is not None else expected, max_bytes, max_ratio,
                                ("IDX_MAX_BYTES", "GZIP_MAX_RATIO"))
    if problem:
        raise DatasetFormatError(f"{path}: IDX dims {dims} of {dtype.name} were refused before reading: {problem}")
    buf = np.empty(expected, np.uint8)
    view, got = memoryview(buf), 0
    while got < expected:
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    if got < expected:
        raise DatasetFormatError(f"{path}: IDX dims {dims} of {dtype.name} need {expected} data bytes, "
                                 f"the file has {got} (truncated or corrupt)")
    if f.read(1):
        raise DatasetFormatError(f"{path}: IDX dims {dims} of {dtype.name} need {expected} data bytes, the file "
                                 "holds more after them (corrupt, or not the file its header describes)")
    arr = buf.view(dtype).reshape(dims)
    return arr if dtype.byteorder in ("=", "|") else arr.astype(dtype.newbyteorder("="))


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
        check_labels(y, len(classes), str(py))
    return raw_from_arrays(arrays["train_x"][:, None], arrays["train_y"], arrays["test_x"][:, None], arrays["test_y"],
                classes, {"source": str(root), "files": {k: str(p) for k, p in found.items()}})
