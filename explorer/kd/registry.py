"""Method registry: the CLI, the app and the docs all read this."""
from __future__ import annotations

from .base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.key in _METHODS:
        raise ValueError(f"method {cls.key!r} registered twice")
    _METHODS[cls.key] = cls
    return cls


def list_methods(category: str | None = None) -> list[str]:
    return [k for k, c in _METHODS.items() if category is None or c.category == category]


def get_method(key: str) -> type[Method]:
    if key not in _METHODS:
        raise KeyError(f"unknown method {key!r}; choose one of: none, {', '.join(_METHODS)}")
    return _METHODS[key]
