"""Dataset registry: every dataset's classes, shape, normalisation, augmentation and recipe."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .raw import RawData


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    reader: Callable[..., RawData]          # reader(root, image_size) -> RawData
    num_classes: int | None                 # None: known only after reading (folder)
    shape: tuple[int, int, int] | None      # (C, H, W); None: set by image_size (folder)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str                            # "crop_flip" | "crop" | "none"
    pad: int                                # pad-crop padding, in pixels
    default_teacher: str
    default_student: str
    needs_root: bool = False                # the user must name a folder
    default_root: str | None = None
    recipe: dict = field(default_factory=dict)   # epochs, teacher_epochs, batch_size, lr


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _DATASETS:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    _DATASETS[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    return list(_DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose one of: {', '.join(_DATASETS)}")
    return _DATASETS[name]
