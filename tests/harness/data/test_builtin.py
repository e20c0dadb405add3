"""curriculoss.harness.data.builtin: the digits set against scikit-learn's."""
from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_digits

from curriculoss.harness import data as datasets


def test_digits_shapes_dtypes_and_split():
    d = datasets.load("digits")
    assert d.name == "digits" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    # standardised by the training set's statistics
    assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    # every sample is used once; the split is stratified: each class has a quarter (+-1) in the test set
    full = Counter(load_digits().target.tolist())
    test = Counter(d.y_test.tolist())
    assert Counter(d.y_train.tolist()) + test == full
    for k, n in full.items():
        assert abs(test[k] - 0.25 * n) <= 1, (k, test[k], n)


def test_digits_images_match_sklearn():
    d = datasets.load("digits")
    raw = load_digits()
    lookup = {img.astype(np.int64).tobytes(): t for img, t in zip(raw.images, raw.target)}
    # One channel: the reader's standardisation is one affine map; undo it with the extreme pixel
    # values (every digit set has pixels 0 and 16) and recover the 0..16 integers.
    lo, hi = float(d.x_train.min()), float(d.x_train.max())
    for x, label in zip(d.x_test[:100], d.y_test[:100]):
        counts = np.rint((x[0].astype(np.float64) - lo) / (hi - lo) * 16).astype(np.int64)
        assert lookup[counts.tobytes()] == label


def test_digits_deterministic_limit_and_regression():
    a, b = datasets.load("digits"), datasets.load("digits")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    small = datasets.load("digits", limit=100)
    assert small.x_train.shape == (100, 1, 8, 8) and small.num_classes == 10
    np.testing.assert_array_equal(small.y_train, a.y_train[:100])
    assert len(small.y_test) == 450
    reg = datasets.load("digits", task="regression")
    assert reg.num_classes is None and reg.y_train.dtype == np.float32 and reg.y_test.dtype == np.float32
    np.testing.assert_array_equal(reg.y_train, a.y_train.astype(np.float32))
