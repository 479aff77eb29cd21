"""Issue 16, item 1: text uploaded from the browser (kind "text"): a .txt file or a .zip of them, checked by content
(UTF-8, no NUL), within the text reader's size caps, names sanitised, zip bombs refused as for image zips; what
is refused leaves nothing on disk and the message says what to upload instead."""
import io
import zipfile

import pytest

from explorer import uploads
from explorer.data.text import MAX_FILE_BYTES, MIN_CHARS, read_text_folder
from explorer.uploads import UploadError, describe_text_folder, save_upload
from support.bombs import zip_of_zeros

PROSE = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and the dog sleeps on.\n" for i in range(80))


def _files(home):
    return sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_txt_file_lands_in_its_own_folder_under_uploads_text(tmp_path):
    assert len(PROSE) > MIN_CHARS
    folder = save_upload("../../etc/My Notes\u2215x.txt", PROSE.encode(), "text", tmp_path)
    assert folder.parent == (tmp_path / "uploads" / "text").resolve() and folder.is_dir()
    assert [p.name for p in folder.iterdir()] == [f"{folder.name.rsplit('-', 1)[0]}.txt"]
    assert ".." not in str(folder) and "/" not in folder.name
    raw = read_text_folder(folder)          # the text-folder dataset reads it as uploaded
    assert raw.extras["chars"] == len(PROSE) and raw.extras["files"] == 1
    assert save_upload("notes.txt", PROSE.encode(), "text", tmp_path).name.startswith("notes-")


@pytest.mark.parametrize("name, data, said", [
    ("a.txt", b"some text\x00with a NUL" * 200, "binary (it holds NUL bytes), not text: upload a .txt file"),
    ("a.txt", "caf\u00e9 ".encode("latin-1") * 1000, "not UTF-8 text (invalid continuation byte at byte 3): save it"),
    ("a.txt", b"too short", f"needs at least {MIN_CHARS} .*; upload more UTF-8 text"),
    ("a.pdf", PROSE.encode(), "not a .txt file nor a zip archive .*: upload a .txt file"),
    ("a.zip", PROSE.encode(), "not a .txt file nor a zip archive .*: upload a .txt file"),
    ("a.txt", b"", "is empty"),
])
def test_what_is_not_usable_text_is_refused_and_nothing_is_kept(tmp_path, name, data, said):
    with pytest.raises(UploadError, match=said.replace("(", r"\(").replace(")", r"\)")) as e:
        save_upload(name, data, "text", tmp_path)
    assert str(tmp_path) not in str(e.value)    # never where the server keeps files
    assert _files(tmp_path) == []


def test_size_caps_are_the_text_readers(tmp_path):
    assert uploads.LIMITS["text"] == read_text_folder.__globals__["MAX_TOTAL_BYTES"]
    with pytest.raises(UploadError, match="over the 20.0 MiB limit for one text file"):
        save_upload("big.txt", b"a" * (MAX_FILE_BYTES + 1), "text", tmp_path)
    assert _files(tmp_path) == []


def test_a_zip_keeps_only_the_txt_files_the_reader_uses(tmp_path):
    data = _zip({"book/one.txt": PROSE[:3000].encode(), "two.txt": PROSE[3000:].encode(), "cover.png": b"\x89PNG",
                 "latin.txt": b"\xe9t\xe9" * 10, "../../escape.txt": PROSE.encode(), ".hidden.txt": b"x"})
    folder = save_upload("my texts.zip", data, "text", tmp_path)
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.txt"))
    assert kept == ["book/one.txt", "escape.txt", "two.txt"]            # '..' stripped, junk deleted
    seen = describe_text_folder(folder)
    assert seen["files"] == 3 and seen["skipped"] == 2
    assert dict(seen["skipped_files"]) == {"cover.png": "not a .txt file",
                                           "latin.txt": "not UTF-8 text (invalid continuation byte at byte 0)"}
    assert _files(tmp_path) == sorted(p.relative_to(tmp_path) for p in folder.rglob("*") if p.is_file())


def test_a_zip_without_usable_text_or_a_bad_zip_is_refused_and_removed(tmp_path):
    with pytest.raises(UploadError, match="no readable .txt file"):
        save_upload("pics.zip", _zip({"a.png": b"\x89PNG" * 100}), "text", tmp_path)
    with pytest.raises(UploadError, match="not a readable zip archive"):
        save_upload("broken.zip", b"PK\x03\x04" + b"\x00" * 100, "text", tmp_path)
    with pytest.raises(UploadError, match="characters of text"):
        save_upload("short.zip", _zip({"a.txt": b"short"}), "text", tmp_path)
    assert _files(tmp_path) == []


def test_a_zip_bomb_of_text_is_refused_before_a_byte_is_written(tmp_path):
    bomb = zip_of_zeros({"zeros.txt": 40 << 20})        # ~40 KB declaring 40 MiB (within the caps, not the ratio)
    with pytest.raises(UploadError, match="ZIP_MAX_RATIO"):
        save_upload("bomb.zip", bomb, "text", tmp_path)
    with pytest.raises(UploadError, match="text MAX_TOTAL_BYTES"):   # honest but over the text cap: not a ratio
        uploads._unzip(_zip({"a.txt": b"ab" * 10}), tmp_path / "x", (10, "text MAX_TOTAL_BYTES"), (10, "m"))
    assert _files(tmp_path) == []
