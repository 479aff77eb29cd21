"""One registry type for methods, schemes, models and datasets (timm's list_models / create_model idea).

Entries are discovered from their package's folder on first use, so a new method or scheme is one
file and nothing else. Menus, CLI listings, validation and the README's tables all read a registry.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, key: Callable[[T], str] = lambda e: e.key,
                 describe: Callable[[T], dict] = lambda e: e.describe(),
                 package: str | None = None, order: Callable[[T], Any] | None = None):
        self.kind = kind               # "method", "scheme", ...: used in messages
        self._key = key
        self._describe = describe
        self._package = package        # discovered on first read: every module of it is imported
        self._order = order            # sort key of listings; ties keep the package's module order
        self._entries: dict[str, T] = {}
        self._discovered = package is None
        self._modules: dict[str, int] = {}   # the package's modules, in discovery order

    def register(self, entry: T) -> T:
        """Add an entry (usable as a class decorator); a key registered twice is an error."""
        key = self._key(entry)
        if key in self._entries and self._entries[key] is not entry:
            raise ValueError(f"{self.kind} {key!r} registered twice")
        self._entries[key] = entry
        return entry

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self._package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                self._modules[f"{self._package}.{info.name}"] = len(self._modules)
                importlib.import_module(f"{self._package}.{info.name}")

    def _sorted(self) -> list[T]:
        """Entries by the order key, then by the module that defines them in discovery order, then as registered:
        the same listing whichever module happened to be imported first (a test, the app, a script); entries
        from outside the package (a user's own file) come after the package's."""
        self._discover()
        rank = lambda e: self._modules.get(getattr(e, "__module__", ""), len(self._modules))   # noqa: E731
        key = (lambda e: (self._order(e), rank(e))) if self._order else rank
        return sorted(self._entries.values(), key=key)

    def get(self, key: str) -> T:
        self._discover()
        if key not in self._entries:
            keys = [self._key(e) for e in self._sorted()]
            hint = difflib.get_close_matches(str(key), keys, n=1)
            raise KeyError(f"unknown {self.kind} {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; choose one of: {', '.join(keys)}")
        return self._entries[key]

    def list(self, **filters) -> list[str]:
        """Keys in catalogue order, of the entries whose attributes equal every given filter (None = any)."""
        return [self._key(e) for e in self._sorted()
                if all(v is None or getattr(e, k) == v for k, v in filters.items())]

    def describe_all(self, **filters) -> list[dict]:
        return [self._describe(self.get(k)) for k in self.list(**filters)]

    def __contains__(self, key: object) -> bool:
        self._discover()
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)
