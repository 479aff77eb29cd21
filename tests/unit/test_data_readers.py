"""Dataset readers (explorer/data/: digits, idx, cifar, image_folder) and the procedural shapes (shapes.py)."""
import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.data import cifar
from explorer.data.cifar import UnsafePickleError, load_cifar
from explorer.data.digits import load_digits_data
from explorer.data.idx import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES, load_idx_dataset, read_idx
from explorer.data.image_folder import load_image_folder
from explorer.data.raw import DatasetFormatError, DatasetNotFoundError, RawData
from explorer.data.shapes import SHAPE_CLASSES, make_shapes
from support.writers import write_cifar, write_idx

FASHION_ROOT = Path(DEFAULT_FASHION_MNIST_ROOT)


# ------------------------------------------------------------------------------------------------ IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_3d_and_1d(tmp_path, suffix):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    write_idx(tmp_path / f"imgs{suffix}", imgs)
    write_idx(tmp_path / f"labels{suffix}", labels)
    raw = (tmp_path / f"imgs{suffix}").read_bytes()
    if suffix:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, 0x08, 3]) and raw[4:16] == bytes([0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 3])
    assert raw[16:] == imgs.tobytes()
    np.testing.assert_array_equal(read_idx(tmp_path / f"imgs{suffix}"), imgs)
    out = read_idx(tmp_path / f"labels{suffix}")
    assert out.dtype == np.uint8 and out.shape == (5,)
    np.testing.assert_array_equal(out, labels)


def test_idx_other_dtypes_are_big_endian(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    write_idx(tmp_path / "a", a)
    assert (tmp_path / "a").read_bytes()[2] == 0x0C
    assert (tmp_path / "a").read_bytes()[-4:] == (2).to_bytes(4, "big", signed=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    f = np.linspace(0, 1, 4, dtype=np.float32)
    write_idx(tmp_path / "f.gz", f)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), f)


def test_idx_bad_files(tmp_path):
    (tmp_path / "wrong").write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(DatasetFormatError, match="not an IDX file.*magic 12340801"):
        read_idx(tmp_path / "wrong")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DatasetFormatError, match="unknown dtype code 0x07"):
        read_idx(tmp_path / "code")
    write_idx(tmp_path / "ok", np.zeros((4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_idx(tmp_path / "short")


def _write_tiny_idx(root, gz, n_train=12, n_test=5):
    rng = np.random.default_rng(1)
    s = ".gz" if gz else ""
    data = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8)}
    for name, arr in data.items():
        write_idx(Path(root) / (name + s), arr)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_tiny(tmp_path, gz):
    data = _write_tiny_idx(tmp_path, gz)
    raw = load_idx_dataset(tmp_path, FASHION_MNIST_CLASSES)
    assert isinstance(raw, RawData)
    assert raw.train_x.shape == (12, 1, 28, 28) and raw.test_x.shape == (5, 1, 28, 28)
    assert raw.train_x.dtype == torch.uint8 and raw.train_y.dtype == torch.int64
    np.testing.assert_array_equal(raw.train_x[:, 0].numpy(), data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_y.numpy(), data["t10k-labels-idx1-ubyte"])
    assert raw.classes == FASHION_MNIST_CLASSES


def test_load_idx_dataset_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load_idx_dataset(tmp_path / "nope", FASHION_MNIST_CLASSES)
    _write_tiny_idx(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        load_idx_dataset(tmp_path, tuple("0123456789"))
    msg = str(e.value)
    assert str(tmp_path) in msg and "t10k-labels-idx1-ubyte[.gz]" in msg and "--data-root" in msg
    assert "train-images-idx3-ubyte[.gz]" in msg   # the full list of files looked for


def test_load_idx_dataset_label_out_of_range(tmp_path):
    _write_tiny_idx(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8))
    with pytest.raises(DatasetFormatError, match="labels span"):
        load_idx_dataset(tmp_path, tuple("0123456789"))


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    raw = load_idx_dataset(FASHION_ROOT, FASHION_MNIST_CLASSES)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert len(raw.classes) == 10 and raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot"
    assert raw.train_y.bincount(minlength=10).tolist() == [6000] * 10
    assert raw.test_y.bincount(minlength=10).tolist() == [1000] * 10
    assert 60 < raw.train_x.float().mean() < 85        # real images (mean ~73), not noise or zeros


# ---------------------------------------------------------------------------------------------- CIFAR

def _pattern(n):
    """Rows in the documented CIFAR layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    base = (c * 80 + h * 2 + w) % 256
    return np.stack([((base + i) % 256).astype(np.uint8).reshape(3072) for i in range(n)])


@pytest.mark.parametrize("as_parent", [True, False])
def test_cifar10_tiny(tmp_path, as_parent):
    rows = _pattern(13)
    names = tuple(f"cls{i}" for i in range(10))
    folder = write_cifar(tmp_path, 10, rows[:10], np.arange(10), rows[10:], [9, 0, 4], classes=names)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    # the real format: readable with the recipe on the CIFAR web page (bytes keys, encoding="bytes")
    with open(folder / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (2, 3072) and d[b"labels"] == [0, 1]
    raw = load_cifar(tmp_path if as_parent else folder, 10)
    assert raw.train_x.shape == (10, 3, 32, 32) and raw.test_x.shape == (3, 3, 32, 32)
    assert raw.train_y.tolist() == list(range(10)) and raw.test_y.tolist() == [9, 0, 4]
    assert raw.classes == names                       # from batches.meta, not a built-in list
    x = raw.train_x[3].numpy()
    assert x[0, 0, 1] == rows[3][1] and x[0, 1, 0] == rows[3][32]   # width fastest, then height
    assert x[1, 0, 0] == rows[3][1024] and x[2, 5, 7] == rows[3][2048 + 5 * 32 + 7]
    np.testing.assert_array_equal(raw.test_x.numpy().reshape(3, 3072), rows[10:])


def test_cifar100_tiny(tmp_path):
    rows = _pattern(6)
    write_cifar(tmp_path, 100, torch.from_numpy(rows[:4].reshape(4, 3, 32, 32)), torch.tensor([0, 17, 58, 99]),
                rows[4:], np.array([99, 3]))
    assert sorted(p.name for p in (tmp_path / "cifar-100-python").iterdir()) == ["meta", "test", "train"]
    raw = load_cifar(tmp_path, 100)
    assert raw.train_x.shape == (4, 3, 32, 32) and raw.test_x.shape == (2, 3, 32, 32)
    assert raw.train_y.tolist() == [0, 17, 58, 99] and raw.test_y.tolist() == [99, 3]
    assert len(raw.classes) == 100 and raw.classes[0] == "apple" and raw.classes[99] == "worm"
    np.testing.assert_array_equal(raw.train_x.numpy().reshape(4, 3072), rows[:4])


def test_cifar_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.*download_cifar"):
        load_cifar(tmp_path, 10)
    with pytest.raises(ValueError):
        load_cifar(tmp_path, 20)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvilPathTouch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


@pytest.mark.parametrize("evil_cls,protocol", [(_Evil, 2), (_Evil, pickle.HIGHEST_PROTOCOL), (_EvilPathTouch, 2)])
def test_cifar_malicious_pickle_is_refused(tmp_path, evil_cls, protocol):
    rows = _pattern(10)
    folder = write_cifar(tmp_path, 10, rows, np.arange(10), rows[:2], [0, 1])
    marker = tmp_path / "PWNED"
    payload = {b"data": evil_cls(marker), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="refused to load global"):
        load_cifar(tmp_path, 10)
    assert not marker.exists()
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_cifar_garbage_and_wrong_content(tmp_path):
    rows = _pattern(10)
    folder = write_cifar(tmp_path, 10, rows, np.arange(10), rows[:2], [0, 1])
    (folder / "data_batch_2").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DatasetFormatError, match="data_batch_2"):
        load_cifar(tmp_path, 10)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": [1, 2, 3], b"labels": [0]}, protocol=3))
    with pytest.raises(DatasetFormatError, match="uint8 \\(N, 3072\\)"):
        load_cifar(tmp_path, 10)


# --------------------------------------------------------------------------------------- image folder

def _png(path, colour, size=(20, 12)):
    from PIL import Image
    Image.new("RGB", size, colour).save(path)


def test_image_folder_skips_bad_files(tmp_path):
    from PIL import Image
    for cls, colour in (("cats", (255, 0, 0)), ("dogs!?", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", colour)
    Image.new("L", (9, 30), 128).save(tmp_path / "cats" / "grey.jpg")         # greyscale -> RGB
    Image.new("RGBA", (8, 8), (0, 255, 0, 255)).save(tmp_path / "dogs!?" / "alpha.png")
    (tmp_path / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (tmp_path / "dogs!?" / "notes.txt").write_text("hello")
    raw = load_image_folder(tmp_path, 16)
    skipped = raw.extras["skipped"]
    assert sorted(Path(p).name for p, _ in skipped) == ["broken.png", "notes.txt"]
    assert all(isinstance(reason, str) and reason for _, reason in skipped)
    assert raw.classes == ("cats", "dogs")
    assert len(raw.train_x) + len(raw.test_x) == 12
    assert raw.train_x.shape[1:] == (3, 16, 16) and raw.train_x.dtype == torch.uint8
    assert raw.test_y.bincount(minlength=2).tolist() == [1, 1]   # stratified 80/20 per class
    red = raw.train_x[(raw.train_y == 0)]
    assert (red[:, 0].float().mean() > 150) and (red[:, 2].float().mean() < 50)
    again = load_image_folder(tmp_path, 16)
    assert torch.equal(again.test_x, raw.test_x) and again.extras["test_files"] == raw.extras["test_files"]


def test_image_folder_presplit_and_errors(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", (10, 200, 30))
    raw = load_image_folder(tmp_path, 8)
    assert raw.train_y.tolist() == [0, 0, 0, 1, 1, 1] and raw.test_y.tolist() == [0, 0, 1, 1]
    assert raw.extras["presplit"] is True
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "a.txt").write_text("no image")
    with pytest.raises(DatasetFormatError, match="no valid image"):
        load_image_folder(bad, 8)
    _png(bad / "x" / "ok.png", (0, 0, 0))
    (bad / "empty_class").mkdir()
    with pytest.raises(DatasetFormatError, match="empty_class"):
        load_image_folder(bad, 8)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", 8)


# --------------------------------------------------------------------------------------------- digits

def test_digits():
    a = load_digits_data()
    assert len(a.train_x) + len(a.test_x) == 1797 and len(a.test_x) == 360
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.uint8 and int(a.train_x.max()) == 255
    assert a.classes == tuple(str(i) for i in range(10))
    counts = a.test_y.bincount(minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37                # stratified
    b = load_digits_data()
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not set(a.extras["train_index"].tolist()) & set(a.extras["test_index"].tolist())


# --------------------------------------------------------------------------------------------- shapes

@pytest.mark.benchmark
def test_shapes_generation_time():
    t = time.perf_counter()
    make_shapes(5000, 1000, seed=0)
    dt = time.perf_counter() - t
    print(f"\nmake_shapes: 6,000 images 32x32 in {dt:.2f} s")
    assert dt < 5.0   # target < 2 s; loose bound for a loaded shared machine


def test_shapes_properties():
    d = make_shapes(5000, 1000, seed=0)
    assert d.train_x.shape == (5000, 3, 32, 32) and d.test_x.shape == (1000, 3, 32, 32)
    assert d.classes == SHAPE_CLASSES and len(SHAPE_CLASSES) == 10
    assert d.train_y.bincount(minlength=10).tolist() == [500] * 10
    assert d.test_y.bincount(minlength=10).tolist() == [100] * 10
    for split in ("train", "test"):
        x, boxes, masks = d.__dict__[f"{split}_x"], d.extras[f"{split}_boxes"], d.extras[f"{split}_masks"]
        assert boxes.shape == (len(x), 4) and masks.shape == (len(x), 32, 32) and masks.dtype == torch.bool
        x0, y0, x1, y1 = boxes.unbind(1)
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 32).all() and (y1 <= 32).all()
        assert (x1 - x0 >= 3).all() and (y1 - y0 >= 3).all()   # thinnest: a bar at the smallest scale
        cols = torch.arange(32)
        inside = ((cols.view(1, 1, 32) >= x0.view(-1, 1, 1)) & (cols.view(1, 1, 32) < x1.view(-1, 1, 1))
                  & (cols.view(1, 32, 1) >= y0.view(-1, 1, 1)) & (cols.view(1, 32, 1) < y1.view(-1, 1, 1)))
        assert masks.any(2).any(1).all() and not (masks & ~inside).any()       # box covers the whole object
        # tight: the mask touches all four box edges
        idx = torch.arange(len(x))
        assert masks[idx, y0, :].any(1).all() and masks[idx, y1 - 1, :].any(1).all()
        assert masks[idx, :, x0].any(1).all() and masks[idx, :, x1 - 1].any(1).all()
        # the object's pixels are one flat colour that stands out from the mean of the rest of the image
        for i in range(0, len(x), 97):
            obj = x[i][:, masks[i]].float()
            assert (obj == obj[:, :1]).all()
            bg = x[i][:, ~masks[i]].float().mean(1)
            assert (obj[:, 0] - bg).abs().mean() > 40


def test_shapes_determinism_and_streams():
    a, b = make_shapes(200, 50, seed=3), make_shapes(200, 50, seed=3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.extras["test_boxes"], b.extras["test_boxes"])
    c = make_shapes(200, 50, seed=4)
    assert not torch.equal(a.train_x, c.train_x)
    # train and test come from different streams: the test set is not a prefix of a training stream
    t = make_shapes(50, 50, seed=3)
    assert not torch.equal(t.train_x, t.test_x)
    assert torch.equal(t.test_x, a.test_x)           # test set independent of n_train
    big = make_shapes(50, 0, seed=3)
    assert torch.equal(big.train_x, t.train_x) and len(big.test_x) == 0
    assert make_shapes(20, 10, seed=0, size=64).train_x.shape == (20, 3, 64, 64)


def test_cifar_archive_extraction_refuses_traversal(tmp_path):
    import io
    import tarfile
    for name, kind in (("../escape.txt", tarfile.REGTYPE), ("cifar-10-batches-py/link", tarfile.SYMTYPE)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
        buf.seek(0)
        dest = tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        with tarfile.open(fileobj=buf, mode="r:gz") as tar, pytest.raises(DatasetFormatError, match="refusing"):
            cifar._safe_extract(tar, dest)
        assert not (tmp_path / "escape.txt").exists() and not (dest / "cifar-10-batches-py").exists()
