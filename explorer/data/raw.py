"""What every dataset reader returns (RawData, before normalisation and splitting) and the errors it raises."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class RawData:
    """uint8 images (N, C, H, W) and int64 labels, for the official train and test splits; modality "text":
    int64 token windows (N, T) and their next tokens (N, T), train before test in the text (explorer/data/text.py)."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    extras: dict = field(default_factory=dict)   # e.g. shapes' object boxes: train_boxes, test_boxes
    modality: str = "image"

    def __post_init__(self):
        if self.modality == "text":
            for name in ("train_x", "train_y", "test_x", "test_y"):
                t = getattr(self, name)
                if t.dtype != torch.int64 or t.dim() != 2:
                    raise ValueError(f"RawData.{name} of a text dataset must be int64 (N, T), got {t.dtype} "
                                     f"{tuple(t.shape)}")
            if self.train_x.shape != self.train_y.shape or self.test_x.shape != self.test_y.shape:
                raise ValueError("RawData: token windows and next tokens differ in shape")
            return
        if self.modality != "image":
            raise ValueError(f"RawData.modality must be 'image' or 'text', got {self.modality!r}")
        for name in ("train_x", "test_x"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.dim() != 4:
                raise ValueError(f"RawData.{name} must be uint8 (N, C, H, W), got {t.dtype} {tuple(t.shape)}")
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError("RawData: images and labels differ in length")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's folder or one of its files is missing (the message says what and how to fix it)."""


class DatasetFormatError(ValueError):
    """A dataset file exists but its contents are not what the format says."""


def raw_from_arrays(train_x, train_y, test_x, test_y, classes, extras=None) -> RawData:
    """RawData from numpy arrays: images as uint8, labels as int64."""
    return RawData(torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)),
                   torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.uint8)),
                   torch.from_numpy(np.ascontiguousarray(test_y, dtype=np.int64)),
                   tuple(classes), dict(extras or {}))


def check_labels(y: np.ndarray, n_classes: int, where: str) -> None:
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DatasetFormatError(f"{where}: labels span {int(y.min())}..{int(y.max())}, "
                                 f"expected 0..{n_classes - 1} for {n_classes} classes")
