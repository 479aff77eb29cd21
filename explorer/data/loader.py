"""Datasets as uint8 tensors resident on the run's device; batching and augmentation happen there.

No DataLoader and no worker processes: for datasets that fit in memory, a batch is an index
into device tensors, and augmentation is a handful of vectorised tensor ops on the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from .raw import RawData
from .registry import DatasetSpec, get_dataset_spec

VAL_FRACTION = 0.1
SPLIT_SEED = 0   # splits and n_train subsets never move with the run seed: runs stay comparable


@dataclass
class Split:
    x: torch.Tensor   # uint8 (N, C, H, W)
    y: torch.Tensor   # int64 (N,)

    def __len__(self):
        return len(self.y)


def text_val_windows(n: int) -> int:
    """How many of a text dataset's n training windows (its last ones) the loader holds out for validation."""
    return max(1, int(round(n * VAL_FRACTION)))


class Dataset:
    """A dataset's train/val/test splits on one device, with its normalisation and augmentation."""

    def __init__(self, spec: DatasetSpec, raw: RawData, n_train: int | None, device: torch.device):
        self.spec = spec
        self.name = spec.name
        self.classes = raw.classes
        self.num_classes = len(raw.classes)
        self.shape = tuple(raw.train_x.shape[1:])
        self.extras = raw.extras
        self.device = device
        self.modality = spec.modality
        if self.modality == "text":
            self._init_text(raw, n_train)
            return
        train_idx, val_idx = _stratified_split(raw.train_y, VAL_FRACTION)
        if n_train is not None:
            if n_train > len(train_idx):
                raise ValueError(f"n_train={n_train} is larger than the {spec.name} training split "
                                 f"({len(train_idx)} images after holding out validation); use at most {len(train_idx)}")
            train_idx = train_idx[_stratified_subset(raw.train_y[train_idx], n_train)]
        self.train_index = train_idx  # rows of the official train split, for tracing a sample back
        self.train = Split(raw.train_x[train_idx].to(device), raw.train_y[train_idx].to(device))
        self.val = Split(raw.train_x[val_idx].to(device), raw.train_y[val_idx].to(device))
        self.test = Split(raw.test_x.to(device), raw.test_y.to(device))
        c = self.shape[0]
        mean = torch.tensor(spec.mean if len(spec.mean) == c else spec.mean[:1] * c, device=device)
        std = torch.tensor(spec.std if len(spec.std) == c else spec.std[:1] * c, device=device)
        # x_norm = x_uint8 * scale + shift  (one fused multiply-add per batch)
        self._scale = (1.0 / (255.0 * std)).view(1, c, 1, 1)
        self._shift = (-mean / std).view(1, c, 1, 1)

    def _init_text(self, raw: RawData, n_train: int | None) -> None:
        """Token windows split by position in the text: validation = the training part's last VAL_FRACTION
        (just before the test part), n_train = the first n_train training windows; no normalisation."""
        n = len(raw.train_x)
        n_val = text_val_windows(n)
        train_idx, val_idx = torch.arange(n - n_val), torch.arange(n - n_val, n)
        if n_train is not None:
            if n_train > len(train_idx):
                raise ValueError(f"n_train={n_train} is larger than the {self.name} training split "
                                 f"({len(train_idx)} windows after holding out validation); use at most {len(train_idx)}")
            train_idx = train_idx[:n_train]
        self.train_index = train_idx
        d = self.device
        self.train = Split(raw.train_x[train_idx].to(d), raw.train_y[train_idx].to(d))
        self.val = Split(raw.train_x[val_idx].to(d), raw.train_y[val_idx].to(d))
        self.test = Split(raw.test_x.to(d), raw.test_y.to(d))
        self._scale = self._shift = None

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        if self._scale is None:   # text: token ids as they are
            return x_uint8
        return torch.addcmul(self._shift, x_uint8.float(), self._scale)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] for display."""
        if self._scale is None:
            return x
        return ((x - self._shift.to(x.device)) / (self._scale.to(x.device) * 255.0)).clamp(0, 1)

    def batches(self, split: str, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False, with_views: bool = False):
        """Yield (x normalised float, y, index) on the device; with_views: (x, y, index, view ids or None).
        Text: x the int64 (B, T) windows, y their next tokens flattened to (B*T,), never augmented."""
        data = self.split(split)
        if self.modality == "text":
            augment = False
        n = len(data)
        order = torch.randperm(n, generator=generator).to(self.device) if shuffle else torch.arange(n, device=self.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            x, views = self.normalize(data.x[idx]), None
            if augment and self.spec.augment != "none":
                flip = self.spec.augment == "crop_flip"
                views = draw_views(len(idx), self.spec.pad, flip, generator).to(self.device)
                x = augment_batch(x, self.spec.pad, flip, views=views)
            y = data.y[idx] if self._scale is not None else data.y[idx].reshape(-1)
            yield (x, y, idx, views) if with_views else (x, y, idx)

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.train)
        return max(1, n // batch_size) if drop_last else -(-n // batch_size)


def n_views(pad: int, augment: str) -> int:
    """How many distinct augmented views an image has: pad-crop offsets x (flipped or not)."""
    if augment == "none":
        return 1
    return (2 * pad + 1) ** 2 * (2 if augment == "crop_flip" else 1)


def draw_views(b: int, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random view id per image, in [0, n_views): flipped * (2 pad + 1)^2 + crop row * (2 pad + 1) + crop
    column. Ids make the views countable, so a frozen teacher's outputs can be cached per (sample, view)."""
    # drawn on the CPU generator so a run is reproducible on any device
    span = 2 * pad + 1
    oy = torch.randint(0, span, (b,), generator=generator) if pad > 0 else torch.zeros(b, dtype=torch.long)
    ox = torch.randint(0, span, (b,), generator=generator) if pad > 0 else torch.zeros(b, dtype=torch.long)
    flipped = (torch.rand(b, generator=generator) < 0.5).long() if flip else torch.zeros(b, dtype=torch.long)
    return flipped * span * span + oy * span + ox


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None,
                  views: torch.Tensor | None = None) -> torch.Tensor:
    """Random pad-and-crop (zero padding = the mean colour after normalisation) and horizontal flip;
    `views` (from draw_views) picks them instead of drawing."""
    b, c, h, w = x.shape
    if views is None:
        views = draw_views(b, pad, flip, generator)
    views = views.to(x.device)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        span = 2 * pad + 1
        oy, ox = (views % (span * span)) // span, views % span
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * pad)
        x = padded.gather(2, rows)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        x = x.gather(3, cols)
    if flip:
        x = torch.where((views >= (2 * pad + 1) ** 2)[:, None, None, None], x.flip(3), x)
    return x


def _stratified_split(y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SPLIT_SEED)
    keep, held = [], []
    for c in torch.unique(y):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def _stratified_subset(y: torch.Tensor, n: int) -> torch.Tensor:
    """n positions into y with class proportions kept (largest-remainder rounding)."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    classes, counts = torch.unique(y, return_counts=True)
    quota = counts.double() * n / len(y)
    take = quota.floor().long()
    rest = n - int(take.sum())
    take[torch.argsort(quota - take, descending=True)[:rest]] += 1
    chosen = []
    for c, k in zip(classes, take):
        idx = (y == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


@lru_cache(maxsize=4)
def _read_cached(name: str, root: str | None, image_size: int | None) -> RawData:
    return get_dataset_spec(name).reader(root=root, image_size=image_size)


def read_raw(name: str, root: str | None = None, image_size: int | None = None) -> RawData:
    """A registered dataset as its reader returns it (cached per process): no split, nothing on a device."""
    if root is None:
        root = get_dataset_spec(name).default_root
    return _read_cached(name, root, image_size)


def load_dataset(name: str = "digits", root: str | None = None, n_train: int | None = None,
                 device: str | torch.device = "cpu", image_size: int | None = None) -> Dataset:
    """Read (cached per process), split and move a registered dataset to `device`."""
    return Dataset(get_dataset_spec(name), read_raw(name, root, image_size), n_train, torch.device(device))
