"""The validation view of a dataset, `<name>~val`: its training split only, with the rows the engine holds out
for validation as the evaluation ("test") split. Tuning trains and scores on it, so the test split is never read.

The view is derived on demand by the dataset registry (any process: a Ray worker too), never listed in menus.
"""
from __future__ import annotations

import dataclasses

import torch

from .loader import SPLIT_SEED, VAL_FRACTION, _stratified_split, read_raw, text_val_windows
from .raw import RawData
from .registry import DATASETS, DatasetSpec

SUFFIX = "~val"


def view_name(dataset: str) -> str:
    return dataset + SUFFIX


def _val_as_test(base: str, root=None, image_size=None) -> RawData:
    """The dataset's training split only, with its held-out validation rows as the evaluation split."""
    raw = read_raw(base, root, image_size)
    if raw.modality == "text":   # the training part's last windows, as the loader holds them out (by position)
        n = len(raw.train_x)
        val = torch.arange(n - text_val_windows(n), n)
    else:
        _, val = _stratified_split(raw.train_y, VAL_FRACTION)   # the rows the engine holds out (same y, same seed)
    assert SPLIT_SEED == 0
    extras = {k: v for k, v in raw.extras.items() if "test" not in k}
    return RawData(raw.train_x, raw.train_y, raw.train_x[val], raw.train_y[val], raw.classes, extras, raw.modality)


def view_spec(name: str) -> DatasetSpec | None:
    """The spec of `<dataset>~val`, or None for a name that is no view of a registered dataset."""
    base = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else None
    if not base or base not in DATASETS:
        return None
    spec = DATASETS.get(base)
    return dataclasses.replace(spec, name=name, description=f"{base}: training split only (tuning)",
                               reader=lambda root=None, image_size=None: _val_as_test(base, root, image_size))


DATASETS.derive(view_spec)
