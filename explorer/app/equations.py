"""Long equations on several lines, so they fit a page's column (no Streamlit).

A method's or scheme's `equation` is one line of LaTeX; on the Train page's form column (260-500 px) the long
ones (RKD, AB, CRD, DeepInversion, ...) were cut off on the right. `split_equation` breaks it, outside any
braces or \\left..\\right pair, at the separators the equations already use between their parts (",\\ ",
",\\quad ") and, where a part is still long, before a top-level " + " or " - ", into a `gathered` block. The
page also lets a display that is still wider than its column scroll sideways (widgets.EQUATION_CSS)."""
from __future__ import annotations

import re

WIDTH = 42        # visible characters of a line (a command counts as one)
_SEPARATOR = re.compile(r",\s*\\(?:quad|qquad|;|,|\ )\s*|,\\\s")
_OPERATOR = re.compile(r"\s[+-]\s")


def visible_length(tex: str) -> int:
    """About how many glyphs `tex` draws: a command counts as one, braces and spaces as none."""
    tex = re.sub(r"\\(?:text|mathrm|operatorname)\{([^{}]*)\}", r"\1", tex)
    tex = re.sub(r"\\[a-zA-Z]+|\\.", "x", tex)
    return len(re.sub(r"[{}\s^_]", "", tex))


def _top_level(tex: str, pattern: re.Pattern, parens: bool = False) -> list[tuple[int, int]]:
    """Spans of `pattern` matches at brace depth 0 and outside \\left..\\right (parens: and outside
    brackets, so a separator inside an indicator's [a, b] stays)."""
    depth, spans = [0] * (len(tex) + 1), []
    d, p, i = 0, 0, 0
    while i < len(tex):
        if parens and tex[i] in "([":
            p += 1
        elif parens and tex[i] in ")]":
            p -= 1
        if tex.startswith(r"\left", i) and not tex[i + 5:i + 6].isalpha():
            d += 1
        elif tex.startswith(r"\right", i) and not tex[i + 6:i + 7].isalpha():
            d -= 1
        elif tex[i] == "\\":
            depth[i] = d
            i += 2
            continue
        elif tex[i] == "{":
            d += 1
        elif tex[i] == "}":
            d -= 1
        depth[i] = d + max(p, 0)
        i += 1
    for m in pattern.finditer(tex):
        if depth[m.start()] == 0 and all(depth[j] == 0 for j in range(m.start(), m.end())):
            spans.append((m.start(), m.end()))
    return spans


def _split_long(part: str, width: int) -> list[str]:
    if visible_length(part) <= width:
        return [part]
    cuts = [a for a, _ in _top_level(part, _OPERATOR)]
    lines, start = [], 0
    for k, cut in enumerate(cuts):
        nxt = cuts[k + 1] if k + 1 < len(cuts) else len(part)
        if visible_length(part[start:nxt]) > width and cut > start:
            lines.append(part[start:cut].strip())
            start = cut
    lines.append(part[start:].strip())
    return [lines[0]] + ["{} " + line for line in lines[1:]]   # {}: the + stays a binary operator


def equation_lines(tex: str, width: int = WIDTH) -> list[str]:
    """The lines `tex` is shown on: split at its parts' separators, then long parts before + / -."""
    parts, start = [], 0
    for a, b in _top_level(tex, _SEPARATOR, parens=True):
        parts.append(tex[start:a].strip())
        start = b
    parts.append(tex[start:].strip())
    return [line for part in parts if part for line in _split_long(part, width)]


def split_equation(tex: str, width: int = WIDTH) -> str:
    """`tex` unchanged when it is short, else its lines in a `gathered` block."""
    if visible_length(tex) <= width:
        return tex
    lines = equation_lines(tex, width)
    return tex if len(lines) < 2 else r"\begin{gathered}" + r" \\ ".join(lines) + r"\end{gathered}"
