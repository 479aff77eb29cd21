"""The method registry: every module in explorer/kd/ that registers a Method is found here."""
from __future__ import annotations

from ..registry import Registry
from .base import Method

CATEGORIES = ("response", "feature", "relation")

METHODS: Registry[type[Method]] = Registry("method", package="explorer.kd",
                                           order=lambda m: (CATEGORIES.index(m.category), m.paper.year))
register_method = METHODS.register
get_method = METHODS.get


def list_methods(category: str | None = None) -> list[str]:
    return METHODS.list(category=category)
