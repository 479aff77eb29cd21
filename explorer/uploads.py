"""Files a browser uploads: untrusted bytes, checked before anything reads them.

    path = save_upload("resnet20.pt", data, "checkpoint")      # -> <home>/uploads/checkpoint/resnet20-1a2b3c4d.pt
    check_fits(path, "resnet20", num_classes=10, in_channels=1) # names the layers that do not fit

Every upload is size-limited per kind, type-checked by its first bytes (not its name), and saved
under <home>/uploads/<kind>/ with a sanitised name plus a content hash: nothing a browser sends can
choose where a file lands. Checkpoints are then read with weights_only=True (a pickle that would
run code is refused before anything in it is called); configs are validated like any config
(never with custom code allowed); zipped image folders are unpacked member by member with limits,
and unreadable or non-image files are skipped and counted. Text (for the text-folder datasets) is a .txt file
(UTF-8, no NUL, explorer/data/text.py's caps) or a zip of them, unpacked as an image zip is, saved as a folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import unicodedata
import zipfile
from pathlib import Path

from .bounds import UPLOAD_CHECKPOINT_MAX_UNPACKED, ZIP_MAX_RATIO, BoundError, expansion_problem, zip_members
from .data.text import MAX_FILE_BYTES as TEXT_MAX_FILE, MAX_TOTAL_BYTES as TEXT_MAX_TOTAL
from .store import default_home, safe_name

MiB = 1 << 20
LIMITS = {"checkpoint": 256 * MiB, "config": 256 * 1024, "image_zip": 512 * MiB, "text": TEXT_MAX_TOTAL}   # as sent
ZIP_MAX_MEMBERS = 100_000
ZIP_MAX_TOTAL = 2048 * MiB        # unpacked: a zip bomb stops here
ZIP_MAX_MEMBER = 20 * MiB         # one image; as load_image_folder's max_file_bytes
ZIP_MAX_NAME = 100                # characters of one path component (the extension is kept when shortening)
SKIPPED_FILE = ".upload-skipped.json"   # members refused while unpacking (hidden: the folder reader ignores it)


class UploadError(ValueError):
    """An upload was refused; the message says why and what to upload instead."""


def uploads_dir(kind: str, home: str | Path | None = None) -> Path:
    return Path(home or default_home()) / "uploads" / kind


def clean_filename(name: str) -> tuple[str, str]:
    """(stem, suffix) of an uploaded file's name: the last path component only, unicode look-alikes of
    '/' and '.' folded (NFKC), then explorer.store.safe_name -- no folder, '..', NUL or control character survives."""
    name = unicodedata.normalize("NFKC", str(name)).replace("\\", "/").replace("\x00", "")
    base = name.rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    suffix = re.sub(r"[^a-z0-9]", "", suffix.lower())[:8]
    return safe_name(stem or suffix, max_len=60), suffix


def save_upload(name: str, data: bytes, kind: str, home: str | Path | None = None) -> Path:
    """Check and store one upload; returns the saved file (a folder for image_zip). Raises UploadError
    (or ConfigError for a config whose fields are wrong) and leaves nothing behind when refused."""
    if kind not in LIMITS:
        raise UploadError(f"upload kind {kind!r} is not one of: {', '.join(LIMITS)}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadError(f"an upload's content must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise UploadError(f"{name!r} is empty")
    if len(data) > LIMITS[kind]:
        raise UploadError(f"{name!r} is {_size(len(data))}, over the {_size(LIMITS[kind])} limit for a {kind} "
                          "upload" + (": a zoo model's state_dict is far smaller" if kind == "checkpoint" else ""))
    stem, suffix = clean_filename(name)
    digest = hashlib.sha256(data).hexdigest()[:8]
    folder = uploads_dir(kind, home)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "checkpoint":
        _sniff_checkpoint(name, data)
        dest = _inside(folder, f"{stem}-{digest}.pt")
        return _keep_if_valid(dest, data, _read_checkpoint)
    if kind == "config":
        if b"\x00" in data:
            raise UploadError(f"{name!r} is binary, not a YAML or JSON text file")
        ext = ".json" if suffix == "json" or data.lstrip()[:1] == b"{" else ".yaml"
        dest = _inside(folder, f"{stem}-{digest}{ext}")
        return _keep_if_valid(dest, data, _read_config)
    if kind == "text":
        return _save_text(name, data, _inside(folder, f"{stem}-{digest}"), stem, suffix)
    if data[:4] != b"PK\x03\x04":
        raise UploadError(f"{name!r} is not a zip archive (it starts with {data[:8]!r}): zip a folder holding one "
                          "subfolder of images per class")
    return _unpack(name, data, _inside(folder, f"{stem}-{digest}"), _keep_images_only, "image folder")


def check_fits(path: str | Path, arch: str, num_classes: int, in_channels: int, image_size: int = 32) -> None:
    """Raise CheckpointError naming each missing, unexpected or mis-shaped layer if the checkpoint is not a
    state_dict of `arch` built for this many classes and channels."""
    from .checkpoints import load_checkpoint_into
    from .models import create_model
    load_checkpoint_into(create_model(arch, num_classes, in_channels, image_size), path)


def describe_image_folder(folder: str | Path, image_size: int = 32) -> dict:
    """What the folder reader makes of an unpacked upload: images read, classes, and files skipped (with why)."""
    from .data.image_folder import load_image_folder
    folder = Path(folder)
    raw = load_image_folder(folder, image_size)
    skipped = [(str(Path(p).relative_to(folder)), why) for p, why in raw.extras["skipped"]] + _refused(folder)
    return {"images": len(raw.train_x) + len(raw.test_x), "classes": list(raw.classes), "skipped": len(skipped),
            "skipped_files": skipped}


def describe_text_folder(folder: str | Path) -> dict:
    """What the text reader makes of an unpacked text upload: files read, characters, files skipped (with why)."""
    raw = _read_text(folder := Path(folder))
    skipped = [(str(Path(p).relative_to(folder)), why) for p, why in raw.extras["skipped"]] + _refused(folder)
    return {"files": raw.extras["files"], "chars": raw.extras["chars"], "skipped": len(skipped),
            "skipped_files": skipped}


# ---------------------------------------------------------------------- internals
def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


def _inside(folder: Path, filename: str) -> Path:
    """The destination, proven to be directly inside `folder` (belt and braces after sanitising)."""
    dest = (folder / filename).resolve()
    if dest.parent != folder.resolve():
        raise UploadError(f"refused file name {filename!r}")
    return dest


def _sniff_checkpoint(name: str, data: bytes) -> None:
    # torch.save writes a zip ("PK\x03\x04"); the legacy format is a pickle of protocol >= 2 (0x80)
    if data[:4] != b"PK\x03\x04" and data[:1] != b"\x80":
        raise UploadError(f"{name!r} is not a PyTorch checkpoint (it starts with {data[:8]!r}); upload a file "
                          "written by torch.save(model.state_dict(), path)")


def _keep_if_valid(dest: Path, data: bytes, check) -> Path:
    tmp = dest.with_name(f".part-{os.getpid()}-{dest.name}")   # hidden, and keeps the suffix readers go by
    tmp.write_bytes(data)
    try:
        check(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return dest


def _read_checkpoint(path: Path) -> None:
    from .checkpoints import CheckpointError, read_state_dict
    try:
        read_state_dict(path, max_bytes=LIMITS["checkpoint"], max_unpacked=UPLOAD_CHECKPOINT_MAX_UNPACKED)
    except CheckpointError as e:
        raise UploadError(str(e).replace(path.name, "the upload")) from None


def _read_config(path: Path) -> None:
    from .config import ConfigError, RunConfig
    try:
        RunConfig.load(path)   # allow_custom_code stays False: an uploaded config never names code to import
    except ConfigError as e:   # keep the field; do not show the browser where the server keeps files
        raise ConfigError(e.field, str(e).split(": ", 1)[-1].replace(str(path), "the upload")) from None


def _member_parts(name: str) -> list[str]:
    """A zip member's path as safe components: no '..', no absolute root, no separators, no control
    characters; unicode letters are kept so class folders keep their names. A component over
    ZIP_MAX_NAME characters (or 200 UTF-8 bytes) is shortened keeping its extension, plus a hash of the
    full name so two long names sharing a prefix stay two files."""
    parts = []
    for part in unicodedata.normalize("NFKC", name).replace("\\", "/").split("/"):
        part = re.sub(r"[^\w.\- ]", "_", part).strip(" .")
        if len(part) > ZIP_MAX_NAME or len(part.encode()) > 200:
            stem, dot, ext = part.rpartition(".")
            ext = "." + ext if dot and stem and len(ext) <= 16 else ""
            stem = part[:len(part) - len(ext)]
            tag = "-" + hashlib.sha256(part.encode()).hexdigest()[:8]
            keep = ZIP_MAX_NAME - len(tag) - len(ext)
            while len((stem[:keep] + tag + ext).encode()) > 200:
                keep -= 1
            part = stem[:keep].rstrip(" .") + tag + ext
        if part:
            parts.append(part)
    return parts


def _save_text(name: str, data: bytes, dest: Path, stem: str, suffix: str) -> Path:
    """A .txt file, or a .zip of them, as a folder of checked .txt files (the text-folder reader's input)."""
    fix = "upload a .txt file (UTF-8 text) or a .zip of .txt files"
    if data[:4] == b"PK\x03\x04":
        return _unpack(name, data, dest, _keep_text_only, "text", (TEXT_MAX_TOTAL, "text MAX_TOTAL_BYTES"),
                       (TEXT_MAX_FILE, "text MAX_FILE_BYTES"))
    if suffix != "txt":   # nor a zip archive, by its first bytes
        raise UploadError(f"{name!r} is not a .txt file nor a zip archive (it starts with {data[:8]!r}): {fix} "
                          "(plain text saved under another name: rename it .txt)")
    if len(data) > TEXT_MAX_FILE:
        raise UploadError(f"{name!r} is {_size(len(data))}, over the {_size(TEXT_MAX_FILE)} limit for one text file: "
                          "split it into several .txt files and upload them as a .zip")
    if b"\x00" in data:
        raise UploadError(f"{name!r} is binary (it holds NUL bytes), not text: {fix}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UploadError(f"{name!r} is not UTF-8 text ({e.reason} at byte {e.start}): save it with the UTF-8 "
                          "encoding (most editors: Save as... > Encoding) and upload it again") from None
    if not dest.is_dir():   # else the same bytes were checked before
        dest.mkdir()
        try:
            (dest / f"{stem}.txt").write_bytes(data)
            _read_text(dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def _read_text(folder: Path):
    """The text reader's view of `folder` (as training reads it); UploadError, in the upload's words, if none."""
    from .data.text import read_text_folder
    try:
        return read_text_folder(folder)
    except (OSError, ValueError) as e:   # no readable .txt, too little text
        said = str(e).replace(f"text files under {folder}", "the upload").replace(str(folder), "the upload")
        raise UploadError(f"{said}; upload more UTF-8 text (several .txt files may be zipped together)") from None


def _keep_text_only(dest: Path) -> None:
    """Read the unpacked folder as training would, then delete every file it would not use (not .txt, not
    UTF-8, binary, over the caps), listing each with why in SKIPPED_FILE: refused junk never stays on disk."""
    raw = _read_text(dest)   # raises when no usable text is left: the caller removes the folder
    refused = _refused(dest)
    for path, why in raw.extras["skipped"]:
        refused.append((str(Path(path).relative_to(dest)), why))
        Path(path).unlink()
    _prune(dest, refused)


def _refused(dest: Path) -> list[tuple]:
    """The files refused while unpacking or checking `dest`, with why (SKIPPED_FILE)."""
    return [tuple(r) for r in json.loads((dest / SKIPPED_FILE).read_text())] if (dest / SKIPPED_FILE).is_file() else []


def _prune(dest: Path, refused: list) -> None:
    """Remove the folders left empty under `dest` and list the refused files in SKIPPED_FILE."""
    for folder in sorted((p for p in dest.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if refused:
        (dest / SKIPPED_FILE).write_text(json.dumps(refused))


def _unpack(name: str, data: bytes, dest: Path, keep, what: str, *bounds) -> Path:
    """Unzip into `dest` (`bounds`: see _unzip); `keep(dest)` deletes what training would not read; all or nothing."""
    if dest.is_dir():   # the same bytes were unpacked and checked before
        return dest
    try:
        _unzip(data, dest, *bounds)
        keep(dest)
    except Exception as e:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, UploadError):
            raise
        raise UploadError(f"{name!r} holds no usable {what}: {str(e).replace(str(dest), 'the zip')}") from None
    return dest


def _unzip(data: bytes, dest: Path, total_bound: tuple[int, str] | None = None,
           member_bound: tuple[int, str] | None = None) -> None:
    """Unpack member by member: declared sizes checked first (a bomb is refused before a byte is written), then
    the bytes actually written; bounds are (limit, its name), an image folder's (read when called) by default."""
    max_total, total_name = total_bound or (ZIP_MAX_TOTAL, "ZIP_MAX_TOTAL")
    max_member = (member_bound or (ZIP_MAX_MEMBER, "ZIP_MAX_MEMBER"))[0]
    try:
        zf, members = zip_members(io.BytesIO(data), "the zip", ZIP_MAX_MEMBERS, "ZIP_MAX_MEMBERS")
    except BoundError as e:
        raise UploadError(str(e)) from None
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise UploadError(f"the upload is not a readable zip archive ({e})") from None
    # the central directory declares every member's size: refuse a bomb before writing a byte
    declared = sum(m.file_size for m in members if not m.is_dir())
    problem = expansion_problem(declared, len(data), max_total, ZIP_MAX_RATIO, (total_name, "ZIP_MAX_RATIO"))
    if problem:
        raise UploadError(f"the zip was refused: {problem.replace('decompression bomb', 'zip bomb')}")
    plan = []   # (member, safe parts) of the files to write
    for info in members:
        if info.is_dir():
            continue
        raw = info.filename.replace("\\", "/").split("/")
        if any(p.startswith(".") and p not in (".", "..") or p == "__MACOSX" for p in raw):
            continue   # hidden files and macOS resource forks are not data
        parts = _member_parts(info.filename)
        if parts:
            plan.append((info, parts))
    folders = {tuple(parts[:i]) for _, parts in plan for i in range(1, len(parts))}
    folders |= {tuple(_member_parts(m.filename)) for m in members if m.is_dir()}
    dest.mkdir(parents=True)
    root = dest.resolve()
    refused, total = [], 0
    for info, parts in plan:
        mode = info.external_attr >> 16
        why = ("a symbolic link" if (mode & 0o170000) == 0o120000 else "encrypted" if info.flag_bits & 0x1 else
               f"over {_size(max_member)}" if info.file_size > max_member else
               f"a file with the same name as the folder {'/'.join(parts)}/ of the zip (the folder is kept)"
               if tuple(parts) in folders else None)
        if why:
            refused.append((info.filename, why))
            continue
        target = root.joinpath(*parts)
        if root not in target.resolve().parents:
            refused.append((info.filename, "outside the folder"))
            continue
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    total += len(chunk)
                    if written > max_member or total > max_total:   # sizes in the header can lie
                        raise UploadError(f"the zip unpacks to more than {_size(max_total)} (or a member to more "
                                          f"than {_size(max_member)}); is it a zip bomb?")
                    out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:   # corrupt member
            if target.is_file():
                target.unlink()
            what = f"cannot be written ({e.strerror})" if isinstance(e, OSError) and e.strerror else \
                f"unreadable in the zip ({type(e).__name__})"
            refused.append((info.filename, what))
    if refused:
        (dest / SKIPPED_FILE).write_text(json.dumps(refused))


def _keep_images_only(dest: Path) -> None:
    """Read the unpacked folder as training would, then delete every file it would not use (non-images,
    unreadable or oversized images, files outside class folders): a refused upload's junk never stays
    on disk. Deleted files are listed with why in SKIPPED_FILE."""
    from .data.image_folder import load_image_folder
    raw = load_image_folder(dest, 32)   # raises when no usable image is left: the caller removes the folder
    used = {str(Path(p).resolve()) for p in raw.extras["train_files"] + raw.extras["test_files"]}
    why = {str(Path(p).resolve()): r for p, r in raw.extras["skipped"]}
    refused = _refused(dest)
    for path in sorted(p for p in dest.rglob("*") if p.is_file() and p != dest / SKIPPED_FILE):
        key = str(path.resolve())
        if key not in used:
            refused.append((str(path.relative_to(dest)), why.get(key, "not an image of a class folder")))
            path.unlink()
    _prune(dest, refused)
