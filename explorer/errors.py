"""The errors a user sees, and the one place that turns an exception into a message they can act on.

Imports nothing from the engine, so every layer (config, data, engine, app, CLI) can raise and explain.
"""
from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path


class ConfigError(ValueError):
    """A config value is wrong: names the field and what is allowed."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"config field '{field_name}': {message}")
        self.field = field_name
        self.detail = message


class RunCancelled(Exception):
    pass


class RunFailed(RuntimeError):
    """A run ended as failed; the message names the cause and a fix."""


class RunInterrupted(RunFailed):
    """A run ended as interrupted (resumable) by something outside it, e.g. a torchrun rank that stopped;
    already recorded. `reason`: what happened, in a few words."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class StoreError(RuntimeError):
    """The run store cannot be read or written (damaged, or its disk is full): names the path and a fix."""


# ---------------------------------------------------------------------- a full disk
LOW_SPACE_BYTES = 1 << 20   # a write that failed with less than this free is taken as "the disk is full"
# what a full disk looks like inside errors that carry no errno: torch.save's RuntimeErrors, sqlite's
_FULL_TEXT = ("no space left", "enospc", "errno 28", "database or disk is full", "disk quota exceeded")
_WRITE_FAILED_TEXT = ("file write failed", "iostream error", "unexpected pos", "disk i/o error", "write failed",
                      "failed writing")


def free_space(path: str | Path) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding `path` (or its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError:
        return None
    return usage.free, usage.total


def is_disk_full(e: BaseException, path: str | Path | None = None) -> bool:
    """ENOSPC in any form: an OSError, or the text of torch's and sqlite's errors (which drop the errno);
    with `path`, also a write that failed while its filesystem has under LOW_SPACE_BYTES free."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(x).lower()
        if any(t in text for t in _FULL_TEXT):
            return True
        if path is not None and any(t in text for t in _WRITE_FAILED_TEXT):
            space = free_space(path)
            if space is not None and space[0] < LOW_SPACE_BYTES:
                return True
        todo += [x.__cause__, x.__context__]
    return False


def disk_full_message(path: str | Path, space: tuple[int, int] | None = None) -> str:
    """"disk full at PATH, free N MB of T MB" and the fix; `space` as measured when the write failed."""
    space = space if space is not None else free_space(path)
    free = f", free {space[0] / 1e6:.1f} MB of {space[1] / 1e6:.1f} MB" if space else ""
    return (f"disk full at {path}{free} (No space left on device). Free disk space, or set "
            "KD_EXPLORER_HOME to a folder on a larger disk")


# ---------------------------------------------------------------------- no unsafe advice
# torch's refusals suggest loading the file with weights_only=False or allow-listing its globals: advice
# that runs the code a hostile file carries. No message of ours ever passes it on.
_UNSAFE_ADVICE = ("weights_onlysettofalse", "weights_only=false", "weights_onlytofalse", "fromfalsetotrue",
                  "safe_globals", "trustedsource", "ifyoutrust", "youtrust", "checkthedocumentationoftorch.load")


def scrub(text: str) -> str:
    """`text` without any sentence that advises loading a file unsafely."""
    def unsafe(sentence: str) -> bool:
        flat = re.sub(r"[`'\"\s]", "", sentence.lower())
        return any(m in flat for m in _UNSAFE_ADVICE)
    lines = []
    for line in text.splitlines():
        kept = [s for s in re.split(r"(?<=[.!?])\s+", line) if not unsafe(s)]
        if "".join(kept).strip() or not line.strip():
            lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def explain(e: BaseException, where: str | Path | None = None) -> str:
    """A message a user can act on, for the failures we can name; `where`: the folder being written."""
    if isinstance(e, (RunFailed, StoreError)):
        return scrub(str(e))
    if is_disk_full(e, where):
        path = getattr(e, "filename", None) or where or "."
        return f"{disk_full_message(path)}, and resume the run."
    if _is_out_of_memory(e):
        return (f"the device ran out of memory ({str(e).splitlines()[0][:200]}). Fix: lower --batch-size, "
                "pick a smaller model, or use --device cpu.")
    if isinstance(e, FileNotFoundError):
        return f"a file or folder is missing: {e}"
    return scrub(f"{type(e).__name__}: {e}")


def _is_out_of_memory(e: BaseException) -> bool:
    if "out of memory" in str(e).lower():
        return True
    try:
        import torch
    except ImportError:   # explain() must work wherever an error is shown
        return False
    return isinstance(e, torch.cuda.OutOfMemoryError)
