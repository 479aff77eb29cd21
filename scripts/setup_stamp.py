"""Whether scripts/setup.sh may skip its pip install, so that scripts/start.sh on a set-up checkout starts
at once. It may when the Python running this (the venv setup.sh uses) has kd-explorer installed editable
from this checkout, every requirement (test extras too) installed, and the stamp written after the last
install matches this checkout's path and its current pyproject.toml and setup.py. Change either file, move
the checkout or use another venv, and setup.sh installs again (KD_EXPLORER_REINSTALL=1 forces it).

    python scripts/setup_stamp.py check   # exit 0: up to date, nothing to install
    python scripts/setup_stamp.py write   # after a successful install
    python scripts/setup_stamp.py check test,timm   # the extras installed (default test,png,ray): setup.sh --timm

Only the requirements of the extras that were installed count: an extra in pyproject.toml that this venv does
not use (ray, timm in the main venv) never makes setup install again.

Only the standard library: it runs before anything is installed.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("pyproject.toml", "setup.py", "scripts/setup.sh")   # what decides what setup installs
DIST = "kd-explorer"
EXTRAS = "test,png,ray"   # what setup.sh installs into the main venv (.venv-timm: test,timm)


def fingerprint(root: Path = ROOT, extras: str = EXTRAS) -> str:
    h = hashlib.sha256(str(root.resolve()).encode() + b"\0" + extras.encode() + b"\0")
    for name in INPUTS:
        path = root / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return h.hexdigest()


def stamp_path(prefix: str | Path = sys.prefix) -> Path:
    return Path(prefix) / ".kd-explorer-setup"


def editable_from(root: Path = ROOT, extras: str = EXTRAS) -> bool:
    """kd-explorer is installed editable from `root`, with every requirement it names present (those of an
    extra only when that extra is one of `extras`)."""
    for dist in metadata.distributions(name=DIST):   # a stray kd_explorer.egg-info on sys.path is passed over
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        if info.get("dir_info", {}).get("editable") and info.get("url") == root.resolve().as_uri():
            break
    else:
        return False
    wanted = set(extras.split(","))
    for req in dist.requires or []:
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if extra and extra.group(1) not in wanted:
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        try:
            metadata.distribution(name.group(0))
        except (metadata.PackageNotFoundError, AttributeError):
            return False
    return True


def is_current(stamp: Path | None = None, root: Path = ROOT, extras: str = EXTRAS) -> bool:
    stamp = stamp or stamp_path()
    try:
        written = stamp.read_text().strip()
    except OSError:
        return False
    return written == fingerprint(root, extras) and editable_from(root, extras)


def write(stamp: Path | None = None, root: Path = ROOT, extras: str = EXTRAS) -> None:
    (stamp or stamp_path()).write_text(fingerprint(root, extras) + "\n")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    extras = sys.argv[2] if len(sys.argv) > 2 else EXTRAS
    if what == "check":
        sys.exit(0 if is_current(extras=extras) else 1)
    if what == "write":
        write(extras=extras)
        sys.exit(0)
    sys.exit(f"usage: {sys.argv[0]} check | write [EXTRAS, default {EXTRAS}]")
