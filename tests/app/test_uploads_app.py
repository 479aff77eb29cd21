"""Issue 13, item 11: a zipped image folder uploaded from the browser is checked, unpacked under the user's
folders the app may read, and fills in the Data folder; a checkpoint in the app's own layout
({"student": state_dict}: a run's model.pt, a bundled teacher) is accepted by the teacher checkpoint upload."""
import io
import zipfile
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.app import form as F
from explorer.app.roots import is_allowed
from explorer.models import create_model
from explorer.store import Store
from explorer.uploads import UploadError
from support.images import image_zip

REPO = Path(__file__).resolve().parents[2]
K = F.K


def bundled_format(arch="cnn_tiny", num_classes=10, in_channels=1, image_size=8) -> bytes:
    buf = io.BytesIO()
    torch.save({"student": create_model(arch, num_classes, in_channels, image_size).state_dict()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("top", ["", "my_images/"])
def test_save_image_zip_unpacks_under_an_allowed_root_and_finds_the_classes(top):
    store = Store()
    root, seen = F.save_image_zip(store, "my images.zip", image_zip(top))
    assert is_allowed(root, "folder", store.home) and Path(root).is_relative_to(store.home)
    assert sorted(seen["classes"]) == ["blue", "green", "red"] and seen["images"] == 18
    assert not (Path(root) / "README.txt").exists()                 # only the images training reads are kept
    cfg = F.config_from_form({K + "dataset": "folder", K + "data_root": root, K + "student": "cnn_tiny"})
    assert cfg["data_root"] == root                                  # the form takes it as the Data folder


def test_save_image_zip_refuses_what_is_no_image_folder():
    store = Store()
    with pytest.raises(UploadError, match="not a .zip"):
        F.save_image_zip(store, "images.tar", b"PK\x03\x04")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "no images here")
    with pytest.raises(UploadError):
        F.save_image_zip(store, "notes.zip", buf.getvalue())
    assert not any((store.home / "uploads" / "image_zip").glob("notes*"))


def test_a_bundled_teacher_and_a_bundled_format_checkpoint_are_accepted_by_the_checkpoint_upload():
    store = Store()
    bundled = next(p for p in (REPO / "data" / "teachers").glob("*.pt")
                   if '"dataset": "digits"' in p.with_suffix(".json").read_text())
    out = F.save_upload(store, bundled.name, bundled.read_bytes(), "cnn_large", "digits")
    assert Path(out).is_file()
    assert Path(F.save_upload(store, "model.pt", bundled_format(), "cnn_tiny", "digits")).is_file()
    with pytest.raises(Exception, match="does not fit"):     # still checked against the architecture
        F.save_upload(store, "model.pt", bundled_format("cnn_small"), "cnn_tiny", "digits")


def train_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_train_page_uploads_a_zip_and_fills_the_data_folder():
    at = train_page()
    at.selectbox(key=K + "dataset").set_value("folder").run()
    assert not at.exception, [e.value for e in at.exception]
    at.file_uploader(key=K + "zip_upload").upload("shapes.zip", image_zip("shapes/"), "application/zip").run()
    assert not at.exception, [e.value for e in at.exception]
    root = at.text_input(key=K + "data_root").value
    assert root.endswith("/shapes") and is_allowed(root, "folder", Store().home)
    said = " ".join(s.value for s in at.success)
    assert "18 images in 3 classes" in said and "blue" in said
    assert not at.error, [e.value for e in at.error]


def test_the_train_page_accepts_a_bundled_format_teacher_checkpoint():
    at = train_page()
    at.radio(key=K + "teacher_source").set_value("upload").run()
    at.selectbox(key=K + "teacher").set_value("cnn_tiny").run()
    at.file_uploader(key=K + "upload").upload("model.pt", bundled_format(), "application/octet-stream").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "refused" in e.value]
    assert any("fits cnn_tiny" in s.value for s in at.success)
