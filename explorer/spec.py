"""What a setting is: its type, default, range or choices and help, stated once.

Methods and schemes declare their hyperparameters with `HParam`; RunConfig declares every field with
the same object (`option(...)`). Validation, error messages, the CLI's flags and the Train page's
widgets are all generated from these declarations, so a bound is written in one place.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Paper:
    authors: str
    title: str
    year: int
    venue: str
    arxiv: str = ""

    def cite(self) -> str:
        first = self.authors.split(",")[0].strip()
        return f"{first} et al., {self.venue} {self.year}" + (f" (arXiv:{self.arxiv})" if self.arxiv else "")

    def describe(self) -> dict:
        """The paper's fields as a method's or scheme's describe() lists them."""
        return {"paper": self.title, "authors": self.authors, "year": self.year, "venue": self.venue,
                "arxiv": self.arxiv}

    @staticmethod
    def describe_none() -> dict:
        return {"paper": "", "authors": "", "year": None, "venue": "", "arxiv": ""}


# kinds beyond the scalar ones (bool, int, float, str), for RunConfig's structured fields
STRUCTURED = {"names": "a list of module names, e.g. [layer1, layer2, layer3]",
              "ints": "a list of whole numbers, each at least 0",
              "pairs": "a list of [student_stage, teacher_stage] index pairs, e.g. [[1, 1], [2, 3]]",
              "mapping": "a mapping of names to values",
              "methods": "a list of methods, e.g. [kd, at] or [{key: kd, weight: 0.9}]",
              "device": "auto, cpu, cuda, cuda:N or mps",
              "auto_number": "auto or a number greater than 0"}


@dataclass(frozen=True)
class HParam:
    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    help: str = ""
    log: bool = False                       # widget hint: a log-scaled slider
    choices: tuple | None = None            # the allowed values of a str setting
    kind: str = ""                          # "" = the default's type; else a key of STRUCTURED
    optional: bool = False                  # None allowed: "use the recipe's value"
    open_low: bool = False                  # low itself is not allowed (lr > 0)
    max_len: int | None = None              # for strings
    registry: str | None = None             # allowed values come from this registry (checked by recipes.resolve)
    label: str = ""                         # what the app's widget calls it

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", type(self.default).__name__ if self.default is not None else "str")

    # ------------------------------------------------------------ checking
    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this setting, or None when it is allowed."""
        if value is None:
            return None if self.optional else "must be given"
        k = self.kind
        if k == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if k == "int":
            lo = self.low if self.low is not None else -2**31
            hi = self.high if self.high is not None else 2**31
            ok = is_int(value) and lo <= value <= hi
            return None if ok else f"must be a whole number from {_num(lo)} to {_num(hi)}, got {value!r}"
        if k == "float":
            lo = self.low if self.low is not None else -math.inf
            hi = self.high if self.high is not None else math.inf
            # an int is exact (math.isfinite would overflow on 10**400); a float must be finite
            finite = is_int(value) or (isinstance(value, float) and math.isfinite(value))
            if finite and lo <= value <= hi and not (self.open_low and value == lo):
                return None
            low_text = f"greater than {_num(lo)}" if self.open_low else f"at least {_num(lo)}"
            return f"must be a finite number {low_text} and at most {_num(hi)}, got {value!r}"
        if k == "str":
            if not isinstance(value, str) or not value or "\x00" in value:
                return f"must be a non-empty string, got {value!r}"
            if self.max_len is not None and len(value) > self.max_len:
                return f"must be at most {self.max_len} characters"
            if self.choices is not None and value not in self.choices:
                hint = difflib.get_close_matches(value, [str(c) for c in self.choices], n=1)
                return (f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            return None
        if k == "device":
            ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda", "mps") or
                                             (value.startswith("cuda:") and value[5:].isdigit()))
            return None if ok else f"{value!r} is not a device; choose {STRUCTURED['device']}"
        if k == "auto_number":   # "auto", or a positive number (a text box gives it as a string)
            try:
                ok = value == "auto" or (not isinstance(value, bool) and 0 < float(value) < math.inf)
            except (TypeError, ValueError):
                ok = False
            return None if ok else f"must be {STRUCTURED['auto_number']}, got {value!r}"
        if k == "names":
            ok = isinstance(value, list) and value and all(isinstance(s, str) and s for s in value)
            return None if ok else f"must be a non-empty {STRUCTURED['names'][2:]}"
        if k == "ints":
            ok = isinstance(value, list) and all(is_int(e) and e >= 0 for e in value)
            return None if ok else f"must be {STRUCTURED['ints']}"
        if k == "pairs":
            ok = isinstance(value, list) and value and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(is_int(i) and i >= 0 for i in p) for p in value)
            return None if ok else f"must be {STRUCTURED['pairs']}"
        if k == "mapping":
            return None if isinstance(value, dict) else "must be a mapping of hyperparameter names to values"
        return None   # "methods": structured, checked by RunConfig itself

    def check(self, value: Any, where: str | None = None) -> None:
        p = self.problem(value)
        if p is not None:
            raise ConfigError(where or self.name, p)

    # ------------------------------------------------------------ describing
    def range_text(self) -> str:
        """The allowed values in a few words, for CLI help and widget tooltips."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind in ("int", "float") and (self.low is not None or self.high is not None):
            lo = "" if self.low is None else _num(self.low)
            return f"{'(' if self.open_low else '['}{lo}, {'' if self.high is None else _num(self.high)}]"
        if self.kind == "bool":
            return "true or false"
        return STRUCTURED.get(self.kind, "")

    def describe(self) -> dict:
        d = {"name": self.name, "default": self.default, "low": self.low, "high": self.high, "help": self.help}
        if self.choices:
            d["choices"] = list(self.choices)
        return d


def option(default: Any = None, *, factory=None, **spec) -> Any:
    """A RunConfig field with its HParam spec (the field's name is filled in by `field_specs`)."""
    meta = {"spec": spec}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_specs(cls) -> dict[str, HParam]:
    """{field name: HParam} of a dataclass declared with `option`."""
    import dataclasses
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = HParam(f.name, default, **f.metadata.get("spec", {}))
    return out


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def not_allowed(value, allowed) -> str:
    allowed = [str(a) for a in allowed]
    hint = difflib.get_close_matches(str(value), allowed, n=1) if isinstance(value, str) else []
    return (f"{value!r} is not allowed" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; choose one of: {', '.join(allowed)}")


def _num(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else str(v)
