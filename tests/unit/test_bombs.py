"""Decompression bombs, built for real (tests/support/bombs.py), are refused before they expand.

Each refusal runs in a child process that prints its baseline and peak ru_maxrss: the peak stays under
300 MB above the baseline, the message names the bound it broke and its value, and nothing is left on
disk. The bombs are shown to be live first: read naively, the checkpoint costs over 300 MB and a
9000 x 9000 PNG decodes into a full-size image.
"""
import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer import bounds, uploads
from explorer.checkpoints import CheckpointError, read_state_dict
from explorer.data.idx import read_idx
from explorer.data.raw import DatasetFormatError
from explorer.uploads import describe_image_folder, save_upload
from support.bombs import checkpoint_bomb, gzip_of_zeros, measure_in_child, png_bomb, zip_of_zeros

PEAK_LIMIT = 300e6   # bytes above the child's baseline
GiB, MiB = 1 << 30, 1 << 20


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _png(colour=(200, 30, 30), size=8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), colour, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bombs")


@pytest.fixture(scope="module")
def ckpt_bomb(bomb_dir):
    path = checkpoint_bomb(bomb_dir / "bomb.pt", mib=400)
    with zipfile.ZipFile(path) as z:
        declared = sum(i.file_size for i in z.infolist())
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert path.stat().st_size < 600_000 and declared > 400 * MiB   # ~408 KB that declares 400 MiB
    return path


@pytest.fixture(scope="module")
def zeros_gz():
    """1 GiB of zeros as one gzip member (~1 MB); concatenated after another member it continues that stream."""
    data = gzip_of_zeros(GiB)
    assert len(data) < 1_200_000
    return data


def _refused(call: str, setup: str, home: Path | None = None) -> dict:
    r = measure_in_child(call, setup, home)
    print(f"peak above baseline: {r['above_mb']:.1f} MB (cpu {r['cpu_s']:.2f} s): {r['outcome']}")
    assert r["outcome"] is not None, "the bomb was accepted"
    assert r["peak"] - r["baseline"] < PEAK_LIMIT, r
    return r


# ---------------------------------------------------------------------- checkpoints
def test_the_checkpoint_bomb_is_live(ckpt_bomb):
    """Loaded as torch.load would without the check: 400 MiB resident, so the bound below means something."""
    r = measure_in_child(f"value = torch.load({str(ckpt_bomb)!r}, weights_only=True)['weight'].numel()")
    assert r["outcome"] is None and r["value"] == 100 * MiB
    assert r["peak"] - r["baseline"] > PEAK_LIMIT, r   # the measurement does see the expansion


def test_checkpoint_bomb_is_refused_from_its_central_directory(ckpt_bomb):
    r = _refused(f"read_state_dict({str(ckpt_bomb)!r})", "from explorer.checkpoints import read_state_dict")
    assert r["outcome"].startswith("CheckpointError") and "CHECKPOINT_MAX_RATIO = 20:1" in r["outcome"]
    assert "bomb.pt was refused: it unpacks to 400.0 MiB" in r["outcome"]


def test_checkpoint_bomb_upload_is_refused_and_nothing_is_kept(ckpt_bomb, tmp_path):
    home = tmp_path / "home"
    r = _refused(f"save_upload('teacher.pt', open({str(ckpt_bomb)!r}, 'rb').read(), 'checkpoint', {str(home)!r})",
                 "from explorer.uploads import save_upload", home)
    assert r["outcome"].startswith("UploadError") and "CHECKPOINT_MAX_RATIO" in r["outcome"]
    assert _files(home) == []


def test_checkpoint_unpacked_size_bound_names_its_value(tmp_path):
    """An honest (stored, ratio 1) checkpoint over max_unpacked: refused by size, naming the bound."""
    import torch
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(300_000)}, path)   # 1.2 MB stored
    with pytest.raises(CheckpointError, match=r"over the bound max_unpacked = 1\.0 MiB"):
        read_state_dict(path, max_unpacked=MiB)
    assert read_state_dict(path)["w"].numel() == 300_000   # under the default bound: loads


def test_checkpoint_with_too_many_zip_entries_is_refused_before_parsing(tmp_path, monkeypatch):
    import explorer.checkpoints as ck
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(50):
            z.writestr(f"archive/data/{i}", b"")
    monkeypatch.setattr(ck, "CHECKPOINT_MAX_MEMBERS", 10)
    with pytest.raises(CheckpointError, match="50 zip entries, over the bound CHECKPOINT_MAX_MEMBERS = 10"):
        read_state_dict(path)


# ---------------------------------------------------------------------- gzip IDX
def _idx_header(dims, code=0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims)


@pytest.mark.parametrize("kind", ["declares_1GiB", "trailing_zeros", "garbage_header"])
def test_gzip_idx_bombs_are_refused_with_bounded_memory(kind, zeros_gz, tmp_path):
    """1 MB of .gz: (a) a header declaring 1 GiB of images, refused by the ratio before reading; (b) a
    header declaring 10 images followed by 1 GiB more, refused after reading only what it declares; (c) no
    IDX header at all, refused from its first 4 decompressed bytes."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = {"declares_1GiB": _idx_header((GiB // 784, 28, 28)), "trailing_zeros": _idx_header((10, 28, 28)),
              "garbage_header": b""}[kind]
    path.write_bytes((gzip.compress(header) if header else b"") + zeros_gz)   # a multi-member gzip stream
    assert path.stat().st_size < 1_300_000
    r = _refused(f"read_idx({str(path)!r})", "from explorer.data.idx import read_idx")
    assert r["outcome"].startswith("DatasetFormatError")
    want = {"declares_1GiB": "GZIP_MAX_RATIO = 100:1", "trailing_zeros": "holds more after them",
            "garbage_header": "unknown dtype code 0x00"}[kind]
    assert want in r["outcome"]


def test_idx_size_bound_applies_to_plain_files_too(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(_idx_header((3 * MiB,)) + bytes(3 * MiB))
    with pytest.raises(DatasetFormatError, match=r"IDX_MAX_BYTES = 2\.0 MiB"):
        read_idx(path, max_bytes=2 * MiB)
    assert read_idx(path).shape == (3 * MiB,)


def test_small_gzip_of_zeros_is_no_bomb(tmp_path):
    """Under bounds.RATIO_FLOOR no ratio is checked: tiny, all-black files compress 1000:1 and are fine."""
    from support.writers import write_idx
    write_idx(tmp_path / "z.gz", np.zeros((100, 28, 28), np.uint8))
    assert (tmp_path / "z.gz").stat().st_size < 1000 and read_idx(tmp_path / "z.gz").shape == (100, 28, 28)


# ---------------------------------------------------------------------- image zips
def test_image_zip_bomb_is_refused_before_a_byte_is_written(tmp_path):
    """48 members of 20 MiB of zeros (each under the per-member cap): ~1 MB of zip, 960 MiB unpacked."""
    data = zip_of_zeros({f"cats/{i}.png": 20 * MiB for i in range(48)}, {"dogs/ok.png": _png()})
    assert len(data) < 1_100_000
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(data)
    home = tmp_path / "home"
    r = _refused(f"save_upload('pics.zip', open({str(bomb)!r}, 'rb').read(), 'image_zip', {str(home)!r})",
                 "from explorer.uploads import save_upload", home)
    assert r["outcome"].startswith("UploadError") and "ZIP_MAX_RATIO = 20:1" in r["outcome"]
    assert _files(home) == [] and not any((home / "uploads" / "image_zip").iterdir())


def test_junk_under_the_ratio_floor_is_deleted_and_listed(tmp_path):
    """A zip under every bound whose members are junk keeps only its images on disk."""
    data = zip_of_zeros({"cats/zeros.png": 12 * MiB, "readme.bin": 2 * MiB},
                        {"cats/a.png": _png(), "cats/b.png": _png(), "dogs/c.png": _png((0, 0, 200)),
                         "dogs/d.png": _png((0, 0, 200)), "dogs/notes.txt": b"text"})
    folder = save_upload("pics.zip", data, "image_zip", tmp_path / "home")
    kept = sorted(str(p.relative_to(folder)) for p in _files(folder))
    assert kept == [uploads.SKIPPED_FILE, "cats/a.png", "cats/b.png", "dogs/c.png", "dogs/d.png"]
    report = describe_image_folder(folder)
    assert report["images"] == 4
    assert {p for p, _ in report["skipped_files"]} == {"cats/zeros.png", "readme.bin", "dogs/notes.txt"}
    assert sum(p.stat().st_size for p in _files(tmp_path / "home")) < 100_000   # 14 MiB of junk gone


# ---------------------------------------------------------------------- images
def test_the_png_bomb_is_live(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bomb(9000, 9000))
    assert path.stat().st_size < 20_000
    with Image.open(path) as im:
        assert im.size == (9000, 9000)
    r = measure_in_child(f"from explorer.data.image_folder import _load_image\n"
                         f"img, why = _load_image(Path({str(path)!r}), 32, 10**9, max_pixels=10**9)\n"
                         f"value = why or list(img.shape)", setup="from pathlib import Path")
    assert r["value"] == [3, 32, 32]   # a valid image: only the bound keeps it from being decoded
    print(f"decoding one 9000 x 9000 PNG: {r['above_mb']:.0f} MB above baseline, {r['cpu_s']:.1f} s CPU")


def test_png_bombs_are_skipped_from_their_header(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        (root / cls / "ok.png").write_bytes(_png())
        (root / cls / "ok2.png").write_bytes(_png())
        (root / cls / "huge.png").write_bytes(png_bomb(9000, 9000))
    r = measure_in_child(f"raw = load_image_folder({str(root)!r}, 32)\n"
                         "value = [len(raw.train_x) + len(raw.test_x), sorted(w for _, w in raw.extras['skipped'])]",
                         "from explorer.data.image_folder import load_image_folder")
    print(f"peak above baseline: {r['above_mb']:.1f} MB (cpu {r['cpu_s']:.2f} s)")
    n, reasons = r["value"]
    assert n == 4 and len(reasons) == 2 and r["peak"] - r["baseline"] < PEAK_LIMIT and r["cpu_s"] < 5
    assert all("9000 x 9000 = 81,000,000 pixels, over the bound IMAGE_MAX_PIXELS = 16,777,216" in w for w in reasons)


def test_zip_of_png_bombs_is_refused_with_bounded_memory_and_nothing_left(tmp_path):
    bombs = {f"{c}/{i}.png": png_bomb(9000, 9000) for c in ("cats", "dogs") for i in range(2)}
    data = zip_of_zeros({}, bombs)
    path = tmp_path / "pngs.zip"
    path.write_bytes(data)
    home = tmp_path / "home"
    r = _refused(f"save_upload('pngs.zip', open({str(path)!r}, 'rb').read(), 'image_zip', {str(home)!r})",
                 "from explorer.uploads import save_upload", home)
    assert r["outcome"].startswith("UploadError") and "IMAGE_MAX_PIXELS = 16,777,216" in r["outcome"]
    assert r["cpu_s"] < 5 and _files(home) == []


def test_every_bound_is_listed_in_security_md():
    text = (Path(__file__).resolve().parents[2] / "SECURITY.md").read_text()
    names = [n for n in dir(bounds) if n.isupper() and n not in ("MiB", "GiB")]
    names += ["ZIP_MAX_MEMBERS", "ZIP_MAX_TOTAL", "ZIP_MAX_MEMBER", "ZIP_MAX_NAME", "MAX_CHECKPOINT_BYTES"]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"SECURITY.md's table lacks {missing}"
    assert all(f"`LIMITS[\"{kind}\"]`" in text for kind in uploads.LIMITS)   # the per-kind upload limits too
