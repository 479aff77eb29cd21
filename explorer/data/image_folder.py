"""Your own images: one subfolder per class (optionally train/ and test/), converted to RGB and resized."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..bounds import IMAGE_MAX_PIXELS
from .raw import DatasetFormatError, DatasetNotFoundError, RawData, raw_from_arrays

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")   # the decoders tried: never EPS (Ghostscript) and the like


def _sanitise(name: str, fallback: str) -> str:
    s = re.sub(r"[^\w\-. ]+", "_", name, flags=re.UNICODE)
    s = re.sub(r"\s+", " ", s).strip(" ._")[:64]
    return s or fallback


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _load_image(path: Path, size: int, max_file_bytes: int, max_pixels: int = IMAGE_MAX_PIXELS):
    """(uint8 (3, size, size) array, None) or (None, reason). The pixel count is read from the header
    (PIL opens lazily) and bounded before anything is decoded: 4 KB of PNG can declare 9000 x 9000."""
    from PIL import Image, ImageOps

    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None, f"not an image extension ({path.suffix or 'none'})"
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        return None, f"cannot stat: {e}"
    if nbytes > max_file_bytes:
        return None, f"file too large ({nbytes} bytes > {max_file_bytes})"
    if nbytes == 0:
        return None, "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)   # palette-transparency notes etc.
            with Image.open(path, formats=PIL_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return None, (f"{w} x {h} = {w * h:,} pixels, over the bound IMAGE_MAX_PIXELS = {max_pixels:,} "
                                  "(not decoded)")
                im.load()
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:   # bad EXIF: keep the image as stored
                    pass
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    im = Image.new("RGB", rgba.size, (0, 0, 0))
                    im.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    im = im.convert("RGB")
                im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy(), None
    except Exception as e:   # corrupt, truncated, unsupported, decompression bomb
        return None, f"unreadable image ({type(e).__name__}: {e})"


def load_image_folder(root, image_size: int, max_images: int = 50_000,
                      max_file_bytes: int = 20_000_000) -> RawData:
    """Images in one subfolder per class (png/jpg/jpeg/bmp/gif/webp, searched recursively), converted to RGB
    and resized to image_size x image_size (bilinear). Uses root/train and root/test when both exist, else a
    fixed stratified 80/20 split (seed 0). Unreadable/non-image files are skipped: extras["skipped"] lists
    (path, reason). At most `max_images` files are read, taken round-robin over classes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist: pass --data-root FOLDER holding one "
                                   "subfolder of images per class (or train/ and test/ with such subfolders)")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    splits = {"train": root / "train", "test": root / "test"} if presplit else {"all": root}
    folders = [d.name for d in _class_dirs(splits["train" if presplit else "all"])]
    if not folders:
        raise DatasetFormatError(f"{splits['train' if presplit else 'all']} has no class subfolders: put the "
                                 "images of each class in their own subfolder")
    if presplit:
        extra = sorted({d.name for d in _class_dirs(splits["test"])} - set(folders))
        if extra:
            raise DatasetFormatError(f"{root / 'test'} has class folders missing from {root / 'train'}: {extra}")

    # candidate files per (split, class), capped at max_images round-robin over classes for balance
    cand = {(s, c): _list_files(p / folders[c]) if (p / folders[c]).is_dir() else []
            for s, p in splits.items() for c in range(len(folders))}
    total = sum(len(v) for v in cand.values())
    if total > max_images:
        keys, taken, pos = list(cand), {k: [] for k in cand}, 0
        while pos < max_images:
            progressed = False
            for k in keys:
                i = len(taken[k])
                if i < len(cand[k]) and pos < max_images:
                    taken[k].append(cand[k][i])
                    pos += 1
                    progressed = True
            if not progressed:
                break
        cand = taken

    skipped: list[tuple[str, str]] = []
    loaded: dict[tuple[str, int], list[tuple[np.ndarray, str]]] = {}
    for key, files in cand.items():
        ok = []
        for f in files:
            img, reason = _load_image(f, image_size, max_file_bytes)
            if img is None:
                skipped.append((str(f), reason))
            else:
                ok.append((img, str(f)))
        loaded[key] = ok

    n_ok = sum(len(v) for v in loaded.values())
    if n_ok == 0:
        raise DatasetFormatError(f"no valid image found under {root} ({len(skipped)} files skipped, e.g. "
                                 f"{skipped[:3]}); supported: {', '.join(IMAGE_EXTENSIONS)}")
    first_split = "train" if presplit else "all"
    empty = [folders[c] for c in range(len(folders)) if not loaded[(first_split, c)]]
    if empty:
        raise DatasetFormatError(f"class folder(s) {empty} under {splits[first_split]} have no valid image "
                                 "(remove them or add images)")

    def stack(items):
        xs = np.stack([x for x, _ in items]) if items else np.zeros((0, 3, image_size, image_size), np.uint8)
        return xs, [p for _, p in items]

    parts = {"train": ([], []), "test": ([], [])}
    rng = np.random.default_rng(0)
    for c in range(len(folders)):
        if presplit:
            groups = {"train": loaded[("train", c)], "test": loaded[("test", c)]}
        else:
            items = loaded[("all", c)]
            order = rng.permutation(len(items))
            n_test = 0 if len(items) < 2 else max(1, int(round(0.2 * len(items))))
            te = set(order[:n_test].tolist())
            groups = {"train": [it for i, it in enumerate(items) if i not in te],
                      "test": [it for i, it in enumerate(items) if i in te]}
        for split, items in groups.items():
            parts[split][0].extend(items)
            parts[split][1].extend([c] * len(items))

    (trx, trp), (tex, tep) = stack(parts["train"][0]), stack(parts["test"][0])
    used, classes = set(), []
    for i, name in enumerate(folders):
        s = base = _sanitise(name, f"class_{i}")
        k = 2
        while s in used:
            s, k = f"{base}_{k}", k + 1
        used.add(s)
        classes.append(s)
    extras = {"source": str(root), "skipped": skipped, "train_files": trp, "test_files": tep,
              "class_folders": tuple(folders), "presplit": presplit,
              "not_read_over_limit": max(0, total - max_images)}
    return raw_from_arrays(trx, np.asarray(parts["train"][1], np.int64), tex, np.asarray(parts["test"][1], np.int64),
                classes, extras)
