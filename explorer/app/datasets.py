"""A dataset's class names, image shape and normalisation, as the app's figures need them (read once per process)."""
from __future__ import annotations

from functools import lru_cache

import torch

from ..data import get_dataset_spec, load_dataset


@lru_cache(maxsize=4)
def dataset_meta(name: str, data_root: str | None = None) -> dict:
    """Class names, image shape and normalisation of a dataset (read once per process)."""

    spec = get_dataset_spec(name)
    try:
        data = load_dataset(name, data_root or spec.default_root, None, torch.device("cpu"))
        classes, shape = list(data.classes), tuple(data.shape)
    except Exception:   # the files moved since the run: the registry still knows the shape
        if spec.num_classes is None or spec.shape is None:
            raise
        classes, shape = [str(i) for i in range(spec.num_classes)], spec.shape
    c = shape[0]
    mean = spec.mean if len(spec.mean) == c else spec.mean[:1] * c
    std = spec.std if len(spec.std) == c else spec.std[:1] * c
    return {"classes": [str(k) for k in classes], "shape": tuple(shape), "mean": tuple(mean), "std": tuple(std)}
