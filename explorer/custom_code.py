"""Models from the user's own code ('import:package.module:factory'), which only the CLI's opt-in allows.

A leaf module (no torch, no registry): the config checks the opt-in with it, the engine builds with it.
"""
from __future__ import annotations

import importlib
import re

CUSTOM_PREFIX = "import:"


def is_custom(name: str | None) -> bool:
    return isinstance(name, str) and name.startswith(CUSTOM_PREFIX)


def custom_model_factory(spec: str):
    """Import the factory named by 'import:pkg.module:factory'; it is called as
    factory(num_classes=, in_channels=, image_size=) and returns an nn.Module giving logits."""
    m = re.fullmatch(r"import:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)", spec)
    if not m:
        raise ValueError(f"{spec!r} must look like 'import:package.module:factory'")
    try:
        module = importlib.import_module(m[1])
    except Exception as e:   # the user's own module: any error it raises on import is reported, not a crash
        raise ValueError(f"cannot import {m[1]!r} ({type(e).__name__}: {e}); is it on PYTHONPATH?") from None
    factory = getattr(module, m[2], None)
    if not callable(factory):
        raise ValueError(f"module {m[1]!r} has no callable {m[2]!r}")
    return factory
