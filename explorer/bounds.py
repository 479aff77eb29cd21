"""Bounds on what compressed input may expand to, checked *before* anything is decompressed: a zip's
central directory (checkpoints, zipped image folders), an IDX file's header (gzip is streamed with a cap),
an image's header (its pixel count, before decoding). Every value is here and in SECURITY.md's table;
a refusal names the bound it broke and its value.

    problem = expansion_problem(unpacked, packed, CHECKPOINT_MAX_UNPACKED, CHECKPOINT_MAX_RATIO,
                                ("CHECKPOINT_MAX_UNPACKED", "CHECKPOINT_MAX_RATIO"))   # None, or why refused
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO

MiB = 1 << 20
GiB = 1 << 30

# checkpoints (explorer/checkpoints.py; uploads pass the upload limit as max_unpacked)
CHECKPOINT_MAX_UNPACKED = 1 * GiB     # sum of a torch.save zip's members, from its central directory
UPLOAD_CHECKPOINT_MAX_UNPACKED = 256 * MiB   # the same for an uploaded checkpoint (= its upload limit)
CHECKPOINT_MAX_RATIO = 20             # unpacked / file size: torch stores members uncompressed (ratio ~1)
CHECKPOINT_MAX_MEMBERS = 100_000      # zip entries, counted in the end record before the directory is parsed
# IDX files (explorer/data/idx.py), plain or .gz
IDX_MAX_BYTES = 1 * GiB               # the data the header declares (MNIST's largest file holds 47 MB)
GZIP_MAX_RATIO = 100                  # declared data / .gz file size (real MNIST files: ~5)
# zipped image folders (explorer/uploads.py)
ZIP_MAX_RATIO = 20                    # declared unpacked total / zip size (PNG/JPEG barely compress: ~1)
# below this many unpacked bytes no ratio is checked: a small file of zeros is not a bomb
RATIO_FLOOR = 16 * MiB
# images (explorer/data/image_folder.py): width x height from the header, before decoding
IMAGE_MAX_PIXELS = 4096 * 4096        # 16.8 M pixels (a 12 MP photo passes); the reader resizes to <= 512


class BoundError(ValueError):
    """Input over one of the bounds above; the message names the bound and its value."""


def size_text(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


def expansion_problem(unpacked: int, packed: int, max_unpacked: int, max_ratio: float,
                      names: tuple[str, str]) -> str | None:
    """Why `unpacked` bytes from `packed` bytes is refused (naming the bound and its value), or None.
    The ratio is checked first: it is what marks a bomb; the size bound stops honest but huge input."""
    ratio = unpacked / max(packed, 1)
    if unpacked > RATIO_FLOOR and ratio > max_ratio:
        return (f"it unpacks to {size_text(unpacked)} from {size_text(packed)}, a ratio of {ratio:,.0f}:1, over the "
                f"bound {names[1]} = {max_ratio}:1; is it a decompression bomb?")
    if unpacked > max_unpacked:
        return (f"it unpacks to {size_text(unpacked)}, over the bound {names[0]} = {size_text(max_unpacked)}; "
                "is it a decompression bomb?")
    return None


def zip_entry_count(f: BinaryIO) -> int | None:
    """The entry count a zip's end record declares (zip64 included), read without parsing the central
    directory (a 200 MB directory of tiny entries would cost gigabytes as Python objects); None if unreadable."""
    try:
        end = zipfile._EndRecData(f)   # noqa: SLF001 -- stdlib's own end-record reader, stable since Python 2
    except (OSError, ValueError, EOFError):
        return None
    return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])


def zip_members(f: BinaryIO, what: str, max_members: int,
                bound_name: str) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Open a zip after checking its entry count against `max_members`; raises BoundError naming the bound
    (zipfile.BadZipFile for an unreadable archive)."""
    n = zip_entry_count(f)
    if n is not None and n > max_members:
        raise BoundError(f"{what} holds {n:,} zip entries, over the bound {bound_name} = {max_members:,}")
    f.seek(0)
    zf = zipfile.ZipFile(f)
    return zf, zf.infolist()
