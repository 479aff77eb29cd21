"""Dataset registry: every dataset's classes, shape, normalisation, augmentation and recipe."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..registry import Registry
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
    takes_image_size: bool = False          # the reader resizes to image_size (else the field is refused)
    recipe: dict = field(default_factory=dict)   # epochs, teacher_epochs, batch_size, lr (+ schedule, momentum, weight_decay for teachers)
    # "image": uint8 (N, C, H, W) images and class labels; "text": int64 (N, T) token windows and their next tokens
    # (shape = (T,), num_classes = the vocabulary; explorer/data/text.py)
    modality: str = "image"

    @property
    def takes_root(self) -> bool:
        """The reader reads a folder (data_root); datasets that need none refuse the field."""
        return self.needs_root or self.default_root is not None

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "num_classes": self.num_classes,
                "shape": list(self.shape) if self.shape else None, "default_teacher": self.default_teacher,
                "default_student": self.default_student, "needs_root": self.needs_root, "modality": self.modality}


class DatasetRegistry(Registry):
    """The datasets, plus names derived from them on demand (a dataset's validation view, `digits~val`:
    explorer/data/validation.py) -- resolved in any process, never listed."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._derivers: list[Callable[[str], DatasetSpec | None]] = []

    def derive(self, deriver: Callable[[str], "DatasetSpec | None"]) -> None:
        self._derivers.append(deriver)

    def _derived(self, key: object) -> DatasetSpec | None:
        self._discover()
        if not isinstance(key, str) or key in self._entries:
            return None
        return next((spec for d in self._derivers if (spec := d(key)) is not None), None)

    def get(self, key: str) -> DatasetSpec:
        return self._derived(key) or super().get(key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or self._derived(key) is not None


# listed images first, then text, each in registration order: the same order whichever module was imported first
DATASETS: Registry[DatasetSpec] = DatasetRegistry("dataset", key=lambda d: d.name, package="explorer.data",
                                                  order=lambda d: d.modality != "image")
register_dataset = DATASETS.register
get_dataset_spec = DATASETS.get


def list_datasets() -> list[str]:
    return DATASETS.list()
