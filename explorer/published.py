"""Published results, each with its source and protocol, to show beside the user's own runs.

    for row in published("cifar100", method="kd"): print(published_line(row))
    # published: 73.33 % (resnet32x4→resnet8x4, CRD protocol, last epoch; CRD (Tian et al., ICLR 2020), ...)

The figures are data, not code: data/published/<dataset>.yaml (explorer.resources.PUBLISHED), grouped by
source. Each group names its source, protocol, how many seeds and which epoch (best or last) it reports, and
the pairs (teacher:student) its `top1` lists are aligned with. `rows` here expands them to one flat dict per
(method, pair) with every protocol field filled, so a table or a test reads them the same way.
"""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

from .resources import PUBLISHED

# what every expanded row carries: what was trained, the figure, and the protocol it was measured under
ROW_FIELDS = ("method", "label", "params", "optimizer", "teacher", "student", "dataset", "top1", "source", "url",
              "protocol", "epochs", "schedule", "batch_size", "lr", "weight_decay", "seeds", "reported")


def datasets(folder: str | Path = PUBLISHED) -> list[str]:
    """The datasets with a published-results file."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _load(dataset: str, folder: str) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    path = Path(folder) / f"{dataset}.yaml"
    if not path.is_file():
        return (), ()
    doc = yaml.safe_load(path.read_text()) or {}
    results, baselines = [], []
    for g in doc.get("groups", []):
        src, proto = doc["sources"][g["source"]], doc["protocols"][g["protocol"]]
        common = dict(dataset=doc.get("dataset", dataset), source=src["cite"], url=src.get("url"),
                      protocol=proto["label"], epochs=proto["epochs"], schedule=proto["schedule"],
                      batch_size=proto["batch_size"], lr=proto["lr"], weight_decay=proto["weight_decay"],
                      seeds=g["seeds"], reported=g["reported"])
        pairs = [p.split(":") for p in g["pairs"]]
        for r in g.get("rows", []):
            if len(r["top1"]) != len(pairs):
                raise ValueError(f"{path}: {r['label']}: {len(r['top1'])} figures for {len(pairs)} pairs")
            for (teacher, student), top1 in zip(pairs, r["top1"]):
                if top1 is not None:
                    results.append(dict(common, method=r["method"], label=r["label"], params=r.get("params", {}),
                                        optimizer=r.get("optimizer", "sgd"), teacher=teacher, student=student,
                                        top1=float(top1)))
        for label, figures in (g.get("baselines") or {}).items():
            for (teacher, student), top1 in zip(pairs, figures):
                if top1 is not None:
                    baselines.append(dict(common, method=None, label=label, params={}, optimizer="sgd",
                                          teacher=teacher, student=student, top1=float(top1)))
    return tuple(results), tuple(baselines)


SWITCHES = ("standardize",)   # hyperparameters that make a named variant (KD + LS) wherever they are on


def same_variant(params: dict, row_params: dict) -> bool:
    """Whether a run's method params are the published row's variant: the same values for what the row names,
    and no variant switch on that the row does not name (KD with standardize on is 'KD + LS', not 'KD')."""
    return all(params.get(k, False if k in SWITCHES else None) == v for k, v in row_params.items()) and \
        not any(params.get(k) for k in SWITCHES if k not in row_params)


def _match(row: dict, method, teacher, student, params) -> bool:
    return ((method is None or row["method"] == method) and (teacher is None or row["teacher"] == teacher)
            and (student is None or row["student"] == student)
            and (params is None or same_variant(params, row["params"])))


def published(dataset: str = "cifar100", method: str | None = None, teacher: str | None = None,
              student: str | None = None, params: dict | None = None, optimizer: str | None = None,
              folder: str | Path = PUBLISHED) -> list[dict]:
    """The published results on `dataset` (copies), filtered by method key, pair, the variant's params
    (params=None: every variant; {} : the plain method only, e.g. KD without LS) and optimiser (DOT: 'dot')."""
    return [dict(r) for r in _load(dataset, str(folder))[0] if _match(r, method, teacher, student, params)
            and optimizer in (None, r["optimizer"])]


def published_baselines(dataset: str = "cifar100", teacher: str | None = None, student: str | None = None,
                        folder: str | Path = PUBLISHED) -> list[dict]:
    """The sources' own teacher and student-alone figures (their `label` says which)."""
    return [dict(r) for r in _load(dataset, str(folder))[1] if _match(r, None, teacher, student, None)]


def published_line(row: dict) -> str:
    """'published: 73.33 % (resnet32x4→resnet8x4, CRD protocol, last epoch; <source>)' -- one figure, cited."""
    variant = "" if row["label"].lower() == str(row["method"]).lower() else f"{row['label']}, "
    when = row["reported"] if row["reported"] != "not stated" else "best/last not stated"
    return (f"published: {row['top1']:.2f} % ({variant}{row['teacher']}→{row['student']}, {row['protocol']}, "
            f"{when}; {row['source']})")
