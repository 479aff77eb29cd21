"""The errors a user sees, and the one place that turns an exception into a message they can act on.

Imports nothing from the engine, so every layer (config, data, engine, app, CLI) can raise and explain.
"""
from __future__ import annotations

import errno


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


def explain(e: BaseException) -> str:
    """A message a user can act on, for the failures we can name."""
    if isinstance(e, RunFailed):
        return str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (f"the disk is full ({e}). Fix: free disk space, or set KD_EXPLORER_HOME to a folder on a "
                "larger disk and resume the run.")
    if _is_out_of_memory(e):
        return (f"the device ran out of memory ({str(e).splitlines()[0][:200]}). Fix: lower --batch-size, "
                "pick a smaller model, or use --device cpu.")
    if isinstance(e, FileNotFoundError):
        return f"a file or folder is missing: {e}"
    return f"{type(e).__name__}: {e}"


def _is_out_of_memory(e: BaseException) -> bool:
    if "out of memory" in str(e).lower():
        return True
    try:
        import torch
    except ImportError:   # explain() must work wherever an error is shown
        return False
    return isinstance(e, torch.cuda.OutOfMemoryError)
