"""The built-in data set: scikit-learn's embedded 8x8 digits (no files needed)."""
from __future__ import annotations

import numpy as np


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te
