"""The README's tables of methods, schemes, models and datasets, rendered from the registries.

    python scripts/registry_tables.py --write   # rewrite the tables in README.md
    python scripts/registry_tables.py --check   # exit 1 when README.md and the registries disagree

Each table sits between `<!-- registry:KIND -->` and `<!-- /registry:KIND -->` in README.md, so a new
method, scheme, model or dataset reaches the docs by rerunning the script; tests/unit/test_docs.py fails
until it is rerun.
"""
from __future__ import annotations

import re


def _table(header: list[str], rows: list[list]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def _paper(d: dict) -> str:
    """Title (linked to arXiv where it has an id), first author's surname, venue and year."""
    if not d["paper"]:
        return "—"
    authors = d["authors"].split(",")
    who = authors[0].split()[-1] + (" et al." if len(authors) > 1 else "")
    title = f"[{d['paper']}](https://arxiv.org/abs/{d['arxiv']})" if d["arxiv"] else d["paper"]
    return f"{title} — {who}, {d['venue']} {d['year']}"


def methods_table() -> str:
    from .kd import METHODS
    return _table(["key", "name", "category", "paper", "default weight"],
                  [[f"`{d['key']}`", d["name"], d["category"], _paper(d), f"{d['default_weight']:g}"]
                   for d in METHODS.describe_all()])


def schemes_table() -> str:
    from .schemes import SCHEMES
    return _table(["key", "name", "category", "paper"],
                  [[f"`{d['key']}`", d["name"], d["category"], _paper(d)] for d in SCHEMES.describe_all()])


def models_table() -> str:
    """Parameters as create_model builds them by default: 10 classes, 3x32x32 inputs."""
    from .models import MODELS, create_model
    rows = []
    for d in MODELS.describe_all():
        params = sum(p.numel() for p in create_model(d["name"]).parameters())
        rows.append([f"`{d['name']}`", d["family"], f"{params / 1e6:.3f} M"])
    return _table(["name", "family", "parameters (10 classes, 3×32×32)"], rows)


def datasets_table() -> str:
    from .data import DATASETS
    rows = []
    for d in DATASETS.describe_all():
        shape = "×".join(map(str, d["shape"])) if d["shape"] else "3×S×S (S: `--image-size`)"
        rows.append([f"`{d['name']}`", d["num_classes"] or "one per subfolder", shape,
                     f"`{d['default_teacher']}` → `{d['default_student']}`", d["description"]])
    return _table(["name", "classes", "shape", "default teacher → student", "description"], rows)


TABLES = {"methods": methods_table, "schemes": schemes_table, "models": models_table, "datasets": datasets_table}


def sync(readme: str) -> str:
    """`readme` with every registry table rendered afresh; ValueError if a table's markers are missing."""
    for kind, render in TABLES.items():
        block = re.compile(rf"(<!-- registry:{kind} -->\n).*?(<!-- /registry:{kind} -->)", re.S)
        if not block.search(readme):
            raise ValueError(f"README.md lacks the <!-- registry:{kind} --> ... <!-- /registry:{kind} --> markers")
        table = render()
        readme = block.sub(lambda m: m.group(1) + table + "\n" + m.group(2), readme)
    return readme
