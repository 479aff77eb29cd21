"""Uploads are untrusted: type by content, size limits, sanitised names, pickles that never run."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import uploads
from explorer.checkpoints import CheckpointError
from explorer.config import ConfigError
from explorer.models import create_model
from explorer.uploads import UploadError, check_fits, describe_image_folder, save_upload


def _state_bytes(arch="cnn_tiny", num_classes=10, in_channels=1, image_size=8, legacy=False) -> bytes:
    buf = io.BytesIO()
    torch.save(create_model(arch, num_classes, in_channels, image_size).state_dict(), buf,
               _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _files(home):
    return sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------- checkpoints
def test_valid_checkpoints_zip_and_legacy_are_saved_inside_the_uploads_folder(tmp_path):
    for legacy in (False, True):
        path = save_upload("teacher.pt", _state_bytes(legacy=legacy), "checkpoint", tmp_path)
        assert path.parent == tmp_path / "uploads" / "checkpoint" and path.suffix == ".pt"
        check_fits(path, "cnn_tiny", 10, 1, 8)   # fits: no error


@pytest.mark.parametrize("data", [b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
                                  pickle.dumps({"w": 1}, protocol=0), b"PK\x03\x04 not really a zip"])
def test_non_checkpoint_bytes_are_refused(tmp_path, data):
    with pytest.raises(UploadError, match="not a PyTorch checkpoint"):
        save_upload("model.pt", data, "checkpoint", tmp_path)
    assert _files(tmp_path) == []   # nothing left behind


def test_the_payload_is_live_so_the_refusals_below_mean_something(tmp_path):
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(marker)))   # an unsafe load really runs it
    assert marker.exists()


@pytest.mark.parametrize("wrap", ["raw_pickle", "torch_zip", "torch_zip_nested", "torch_legacy"])
def test_code_executing_pickles_are_refused_and_never_run(tmp_path, wrap):
    marker = tmp_path / "pwned"
    if wrap == "raw_pickle":
        data = pickle.dumps(Payload(marker), protocol=4)
    else:
        obj = Payload(marker) if wrap != "torch_zip_nested" else {"fc.weight": torch.zeros(2, 2), "x": Payload(marker)}
        buf = io.BytesIO()
        torch.save(obj, buf, _use_new_zipfile_serialization=wrap != "torch_legacy")
        data = buf.getvalue()
    with pytest.raises(UploadError, match="was refused: it holds Python objects"):
        save_upload("evil.pt", data, "checkpoint", tmp_path / "home")
    assert not marker.exists(), "the pickle's code ran"
    assert _files(tmp_path / "home") == []


def test_wrong_architecture_names_the_mismatched_layers(tmp_path):
    path = save_upload("resnet8.pt", _state_bytes("resnet8", 10, 1, 28), "checkpoint", tmp_path)
    with pytest.raises(CheckpointError) as e:
        check_fits(path, "resnet20", 10, 1, 28)
    assert "missing layers: layer1.1.conv1.weight" in str(e.value)
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        check_fits(path, "resnet8", 100, 1, 28)   # right architecture, wrong class count
    with pytest.raises(CheckpointError, match=r"conv1.weight: checkpoint \(16, 1, 3, 3\) vs model \(16, 3, 3, 3\)"):
        check_fits(path, "resnet8", 10, 3, 28)    # wrong number of input channels


def test_a_tensor_file_that_is_no_state_dict_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save([torch.zeros(3)], buf)
    with pytest.raises(UploadError, match="does not hold a state_dict"):
        save_upload("list.pt", buf.getvalue(), "checkpoint", tmp_path)


def test_oversized_uploads_are_refused(tmp_path, monkeypatch):
    with pytest.raises(UploadError, match="over the 256.0 KiB limit"):
        save_upload("big.yaml", b"#" * (uploads.LIMITS["config"] + 1), "config", tmp_path)
    data = _state_bytes()
    monkeypatch.setitem(uploads.LIMITS, "checkpoint", len(data) - 1)
    with pytest.raises(UploadError, match="limit for a checkpoint"):
        save_upload("model.pt", data, "checkpoint", tmp_path)
    with pytest.raises(UploadError, match="is empty"):
        save_upload("empty.pt", b"", "checkpoint", tmp_path)
    with pytest.raises(UploadError, match="kind"):
        save_upload("x", b"x", "script", tmp_path)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a\x00b.pt", "..",
                                  "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",   # fullwidth ../../etc/passwd
                                  "evil\u202egp.exe", "\u2024\u2024/x.pt", "~/.ssh/authorized_keys", "", "CON"])
def test_file_names_cannot_escape_the_uploads_folder(tmp_path, name):
    path = save_upload(name, _state_bytes(), "checkpoint", tmp_path / "home")
    folder = (tmp_path / "home" / "uploads" / "checkpoint").resolve()
    assert path.parent == folder and path.is_file()
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in path.name) and not path.name.startswith(".")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]


# ---------------------------------------------------------------------- configs
def test_config_uploads_are_validated_and_never_allow_custom_code(tmp_path):
    path = save_upload("run.yaml", b"dataset: digits\nmethods: [kd]\nepochs: 2\n", "config", tmp_path)
    assert path.suffix == ".yaml" and path.parent.name == "config"
    assert save_upload("run.json", json.dumps({"epochs": 3}).encode(), "config", tmp_path).suffix == ".json"
    with pytest.raises(ConfigError) as e:
        save_upload("run.yaml", b"student: import:os:system\n", "config", tmp_path)
    assert e.value.field == "student"
    with pytest.raises(ConfigError) as e:
        save_upload("run.yaml", b"epochs: -3\n", "config", tmp_path)
    assert e.value.field == "epochs" and str(tmp_path) not in str(e.value)
    with pytest.raises(UploadError, match="binary"):
        save_upload("run.yaml", b"\x00\x01\x02", "config", tmp_path)
    assert len(list((tmp_path / "uploads" / "config").iterdir())) == 2


# ---------------------------------------------------------------------- zipped image folders
def _png(color, size=12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_image_zip_skips_corrupt_and_non_image_files_with_a_count(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(3):
            z.writestr(f"cats/c{i}.png", _png(10 * i))
            z.writestr(f"dogs/d{i}.png", _png(200 - 10 * i))
        z.writestr("cats/broken.png", b"\x89PNG\r\n\x1a\n garbage")        # corrupt image
        z.writestr("dogs/notes.txt", b"not an image")                      # not an image
        z.writestr("dogs/empty.jpg", b"")                                  # empty
        z.writestr("../../escaped.png", _png(1))                           # traversal: lands inside, unclassed
        z.writestr("/abs/root.png", _png(2))                               # absolute: lands inside too
        z.writestr(".hidden/x.png", _png(3))                               # hidden: ignored
        link = zipfile.ZipInfo("cats/link.png")
        link.external_attr = (0o120777 << 16)                              # a symlink to /etc/passwd
        z.writestr(link, "/etc/passwd")
    home = tmp_path / "home"
    folder = save_upload("my images.zip", buf.getvalue(), "image_zip", home)
    assert folder.is_dir() and folder.parent == home / "uploads" / "image_zip"
    assert not (tmp_path / "escaped.png").exists() and not any(p.is_symlink() for p in folder.rglob("*"))
    report = describe_image_folder(folder)
    assert report["images"] == 7 and (folder / "abs" / "root.png").is_file()   # 3 cats, 3 dogs, the absolute one
    skipped = dict(report["skipped_files"])
    junk = {"cats/broken.png", "dogs/notes.txt", "dogs/empty.jpg", "cats/link.png", "escaped.png"}
    assert set(skipped) == junk and report["skipped"] == len(report["skipped_files"]) == 5
    assert "symbolic link" in skipped["cats/link.png"] and "class folder" in skipped["escaped.png"]
    assert report["classes"] == ["abs", "cats", "dogs"]
    assert all(folder.resolve() in p.resolve().parents for p in folder.rglob("*"))
    kept = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert not kept & junk and len(kept - {uploads.SKIPPED_FILE}) == 7   # junk deleted, the 7 images kept


def test_image_zip_without_any_image_or_not_a_zip_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cats/a.txt", b"text")
    with pytest.raises(UploadError, match="no usable image folder"):
        save_upload("x.zip", buf.getvalue(), "image_zip", tmp_path)
    with pytest.raises(UploadError, match="not a zip"):
        save_upload("x.zip", _png(5), "image_zip", tmp_path)
    assert _files(tmp_path) == []


def test_zip_bomb_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "ZIP_MAX_TOTAL", 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"a/{i}.png", b"\0" * (1 << 19))   # 1.5 MiB unpacked from a few KiB
    assert len(buf.getvalue()) < 20_000
    with pytest.raises(UploadError, match="zip bomb"):
        save_upload("bomb.zip", buf.getvalue(), "image_zip", tmp_path)
    assert _files(tmp_path) == []


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("file_first", [True, False])
def test_a_file_named_like_a_folder_is_refused_and_the_rest_kept(tmp_path, file_first):
    """`cats` (a file) beside `cats/` (a folder) used to abort the whole upload with [Errno 21] or [Errno 17]."""
    images = {"cats/a.png": _png(10), "cats/b.png": _png(20), "dogs/c.png": _png(200), "dogs/d.png": _png(210)}
    members = {"cats": b"a stray file", **images} if file_first else {**images, "cats": b"a stray file"}
    folder = save_upload("pets.zip", _zip(members), "image_zip", tmp_path / "home")
    report = describe_image_folder(folder)
    assert report["images"] == 4 and report["classes"] == ["cats", "dogs"]
    skipped = dict(report["skipped_files"])
    assert list(skipped) == ["cats"] and "same name as the folder cats/" in skipped["cats"]
    assert (folder / "cats").is_dir() and sorted(p.name for p in (folder / "cats").iterdir()) == ["a.png", "b.png"]


def test_long_member_names_keep_their_extension_and_stay_distinct(tmp_path):
    long_a, long_b = "a" * 150 + "-one.png", "a" * 150 + "-two.png"
    unicode_long = "猫" * 90 + ".jpg"   # 90 characters, 270 UTF-8 bytes: over a filesystem's 255-byte name limit
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, "JPEG")
    members = {f"cats/{long_a}": _png(10), f"cats/{long_b}": _png(20), f"dogs/{unicode_long}": buf.getvalue(),
               "dogs/short.png": _png(200), "c" * 120 + "/x.png": _png(50), "c" * 120 + "/y.png": _png(60)}
    folder = save_upload("long.zip", _zip(members), "image_zip", tmp_path / "home")
    report = describe_image_folder(folder)
    assert report["images"] == 6 and report["skipped"] == 0, report["skipped_files"]
    names = sorted(p.name for p in (folder / "cats").iterdir())
    assert len(names) == 2 and all(n.endswith(".png") and len(n) <= uploads.ZIP_MAX_NAME for n in names)
    assert all(len(p.name.encode()) <= 200 for p in folder.rglob("*"))
    assert [p.suffix for p in (folder / "dogs").iterdir() if p.name != "short.png"] == [".jpg"]
    assert len(report["classes"]) == 3   # the long folder name is a class of its own
