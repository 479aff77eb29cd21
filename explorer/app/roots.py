"""Which folders the app's Data-folder box may read: an allow-list, checked with symlinks resolved.

A browser is not trusted (SECURITY.md), so the app reads data only from
- the user's data folder `<KD_EXPLORER_HOME>/data` (and `<home>/uploads/image_zip` and `<home>/uploads/text`,
  where checked image and text uploads land),
- the chosen dataset's default root (e.g. /usr/share/datasets/fashion-mnist),
- the folders named with `kd-explorer app --data-root DIR` (repeatable), which reach the Streamlit
  process in the environment variable KD_EXPLORER_DATA_ROOTS (os.pathsep-separated).
The command line is trusted and reads any folder: nothing here applies to `kd-explorer run`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..data import get_dataset_spec
from ..errors import ConfigError
from ..store import default_home

ENV = "KD_EXPLORER_DATA_ROOTS"


def allowed_roots(dataset: str | None = None, home: str | Path | None = None) -> list[Path]:
    """The folders (resolved, no duplicates) under which the app may read a dataset."""
    home = Path(home or default_home()).expanduser()
    roots = [home / "data", home / "uploads" / "image_zip", home / "uploads" / "text"]
    if dataset is not None:
        try:
            default = get_dataset_spec(dataset).default_root
        except KeyError:
            default = None
        if default:
            roots.append(Path(default))
    roots += [Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


def is_allowed(root: str | Path, dataset: str | None = None, home: str | Path | None = None) -> bool:
    """Whether `root`, symlinks resolved, is one of the allowed roots or inside one."""
    try:
        path = Path(str(root).strip()).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):   # a symlink loop, a NUL byte
        return False
    return any(path == a or a in path.parents for a in allowed_roots(dataset, home))


def check_data_root(root: str | Path, dataset: str | None = None, home: str | Path | None = None) -> None:
    """Raise ConfigError on data_root unless the app may read `root`; the message names the allowed roots
    only (never what the refused folder holds, nor whether it exists)."""
    if not is_allowed(root, dataset, home):
        allowed = ", ".join(str(a) for a in allowed_roots(dataset, home))
        raise ConfigError("data_root", f"the app reads datasets only from these folders: {allowed}. Put the "
                          "dataset inside one of them, or start the app with `kd-explorer app --data-root FOLDER` "
                          "to allow another (the command line, `kd-explorer run`, reads any folder)")


def allowed_or_none(root: str | None, dataset: str | None = None, home: str | Path | None = None) -> str | None:
    """`root` stripped when the app may read it, else None (the page then reads no folder at all)."""
    root = (root or "").strip() or None
    return root if root is not None and is_allowed(root, dataset, home) else None
