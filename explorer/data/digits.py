"""scikit-learn's bundled 8x8 handwritten digits: the default dataset, no files needed."""
from __future__ import annotations

import numpy as np

from .raw import RawData, raw_from_arrays


def load_digits_data(seed: int = 0) -> RawData:
    """scikit-learn's 1,797 real 8x8 digits, values 0..16 scaled to 0..255, as 1x8x8 uint8.

    The split is a fixed stratified 80/20 one. `seed` is the *split* seed: leave it at 0 (do not pass the
    run seed), so the test set is the same in every run."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images.astype(np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return raw_from_arrays(images[tr], y[tr], images[te], y[te], tuple(str(i) for i in range(10)),
                {"source": "sklearn.datasets.load_digits", "train_index": tr, "test_index": te})
