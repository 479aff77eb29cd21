"""Issue 16, item 1: on the Train page a user's own text (a .txt file, or a .zip of them) is uploaded for the
text-folder datasets, checked, saved under the folders the app may read and filled in as the Data folder; a
binary file, a file over the size cap and a broken zip are refused with what to do, and nothing of them is kept."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.app import form as F
from explorer.app.roots import is_allowed
from explorer.app.text_upload import save_text_upload
from explorer.data.text import MAX_FILE_BYTES
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
K = F.K
PROSE = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and the dog sleeps on.\n" for i in range(80))


def _saved(home: Path) -> list[Path]:
    folder = home / "uploads" / "text"
    return sorted(folder.rglob("*")) if folder.is_dir() else []


def test_save_text_upload_fills_an_allowed_data_folder_the_form_takes():
    store = Store()
    root, said = save_text_upload(store, "notes.txt", PROSE.encode())
    assert is_allowed(root, "text-folder", store.home) and Path(root).is_relative_to(store.home)
    assert said == f"notes.txt: 1 text file, {len(PROSE):,} characters"
    cfg = F.config_from_form({K + "dataset": "text-folder-bpe256", K + "data_root": root, K + "student": "gpt_1x32"})
    assert cfg["data_root"] == root and cfg["dataset"] == "text-folder-bpe256"


def test_the_train_page_uploads_text_and_refuses_bad_files():
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/1_Train.py").run()
    at.selectbox(key=K + "dataset").set_value("text-folder").run()
    assert not at.exception, [e.value for e in at.exception]
    home = Store().home
    for name, data, said in [("notes.txt", b"\x00\x01binary\x00" * 400, "is binary (it holds NUL bytes)"),
                             ("big.txt", b"a" * (MAX_FILE_BYTES + 1), "over the 20.0 MiB limit for one text file"),
                             ("texts.zip", b"PK\x03\x04" + b"\x00" * 64, "not a readable zip archive")]:
        at.file_uploader(key=K + "text_upload").upload(name, data, "application/octet-stream").run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.error]
        assert any(e.startswith("Text refused:") and said in e for e in errors), (name, errors)
        assert not at.text_input(key=K + "data_root").value and _saved(home) == []
    at.file_uploader(key=K + "text_upload").upload("notes.txt", PROSE.encode(), "text/plain").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    root = at.text_input(key=K + "data_root").value
    assert Path(root).parent == (home / "uploads" / "text").resolve() and len(list(Path(root).glob("*.txt"))) == 1
    assert any(f"1 text file, {len(PROSE):,} characters" in s.value for s in at.success)
    at.selectbox(key=K + "dataset").set_value("text-folder-bpe256").run()   # the same upload serves the BPE form
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key=K + "data_root").value == root
