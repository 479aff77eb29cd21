"""The one in-memory form every dataset reader returns, before normalisation and splitting."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RawData:
    """uint8 images (N, C, H, W) and int64 labels, for the official train and test splits."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    extras: dict = field(default_factory=dict)   # e.g. shapes' object boxes: train_boxes, test_boxes

    def __post_init__(self):
        for name in ("train_x", "test_x"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.dim() != 4:
                raise ValueError(f"RawData.{name} must be uint8 (N, C, H, W), got {t.dtype} {tuple(t.shape)}")
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError("RawData: images and labels differ in length")
