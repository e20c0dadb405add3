"""Synthetic and user-given label noise, seeded and reproducible.

Every function takes the clean labels (a 1-D integer array, classes `0 .. C-1`) and returns a
`NoisyLabels`: the noisy labels, the boolean mask of the samples whose label was actually
changed, and the realised noise rate (the mask's mean). Randomness comes from
`numpy.random.default_rng(seed)` only, so the same call with the same `seed` gives the same labels
on every platform and numpy version that keeps the Generator's stream.

Kinds of noise:

- `symmetric`: with probability `rate` a label is replaced by a class drawn uniformly from all
  `C` classes, which may be the true one, as in the IMAE paper (Sec. 4) and the Data Parameters
  paper (Sec. 4.2). The realised rate is then `rate * (C - 1) / C`; `exclude_true=True` draws
  among the other `C - 1` classes, so the realised rate is `rate`.
- `pair_flip`: `y -> (y + 1) mod C` with probability `rate`.
- `asymmetric`: `y -> class_map[y]` with probability `rate`; `CIFAR10_MAP` and
  `MNIST_MAP` are the class-dependent flips of Patrini et al. (CVPR 2017).
- `from_matrix`: a general transition matrix, `matrix[i, j] = P(noisy = j | true = i)`
  (rows are the true class, each row sums to 1).
- `regression`: with probability `rate` a real target is replaced by a uniform draw in
  `[low, high]` (the SuperLoss paper's digit regression uses 1..10, Sec. 3.2).
- `from_file`: noisy labels a person gave, e.g. CIFAR-10N, from `.npy` or `.csv`.

`apply` dispatches by name; it is what the training command line calls.

Examples:
    >>> import numpy as np
    >>> from curriculoss import noise
    >>> y = np.arange(10).repeat(1000)
    >>> noisy = noise.symmetric(y, 0.4, seed=0)
    >>> noisy.labels.shape, noisy.mask.dtype, round(noisy.rate, 2)
    ((10000,), dtype('bool'), 0.36)
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "NoisyLabels",
    "symmetric",
    "pair_flip",
    "asymmetric",
    "from_matrix",
    "regression",
    "from_file",
    "apply",
    "KINDS",
    "CIFAR10_MAP",
    "MNIST_MAP",
]

#: CIFAR-10 class-dependent flips of Patrini et al. (2017), Sec. 6: truck -> automobile,
#: bird -> airplane, deer -> horse, cat <-> dog (classes in the data set's order: 0 airplane,
#: 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck).
CIFAR10_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

#: MNIST class-dependent flips of Patrini et al. (2017), Sec. 6: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
MNIST_MAP: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}

#: The kinds `apply` knows.
KINDS = ("none", "symmetric", "pair", "asymmetric", "file")


@dataclass
class NoisyLabels:
    """Noisy targets with the mask of the corrupted samples.

    Attributes:
        labels: the noisy labels (int64 for classification, float for regression), shape `(N,)`.
        mask: `True` where the sample was corrupted (its label differs from the true one; for
            regression, where its target was replaced), shape `(N,)`.
        rate: the realised noise rate, `mask.mean()` (0.0 for an empty set).
    """

    labels: np.ndarray
    mask: np.ndarray
    rate: float = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.labels.shape != self.mask.shape:
            raise ValueError(f"labels and mask must have the same shape; got {self.labels.shape} and {self.mask.shape}")
        self.rate = float(self.mask.mean()) if self.mask.size else 0.0

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------------------------------------------
# validation


def _check_rate(rate: float) -> float:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"rate must be a number in [0, 1]; got {rate!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"rate must be in [0, 1]; got {rate!r}")
    return value


def _check_seed(seed) -> np.random.Generator:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}")
    return np.random.default_rng(int(seed))


def _check_num_classes(num_classes, minimum: int = 1) -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int; got {num_classes!r}")
    if num_classes < minimum:
        raise ValueError(f"num_classes must be >= {minimum}; got {num_classes}")
    return int(num_classes)


def _as_1d(values, name: str, kind: type, of: str, expected_dtype: str) -> np.ndarray:
    """`values` as a 1-D array of numpy type `kind` (`np.integer`, `np.number`), not bool; an empty one of any.
    The errors say `{name} must be a 1-D array{of}` and `{name} must {expected_dtype}` (`{dtype}`: the one got)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array{of}; got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, kind) or arr.size == 0):
        raise ValueError(f"{name} must {expected_dtype.format(dtype=arr.dtype)}")
    return arr


def _as_labels(labels, name: str = "labels") -> np.ndarray:
    """`labels` as a 1-D int64 array of non-negative class indices (a copy is not made)."""
    arr = _as_1d(labels, name, np.integer, " of class indices", "have an integer dtype; got {dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0; got a minimum of {arr.min()}")
    return arr.astype(np.int64, copy=False)


def _resolve_classes(y: np.ndarray, num_classes, minimum: int = 1, name: str = "labels") -> int:
    """The number of classes: `num_classes` checked against `y`, or `max(y) + 1`."""
    top = int(y.max()) + 1 if y.size else 0
    if num_classes is None:
        return max(top, minimum)
    c = _check_num_classes(num_classes, minimum)
    if top > c:
        raise ValueError(f"{name} must lie in [0, num_classes={c}); got a maximum of {top - 1}")
    return c


# ---------------------------------------------------------------------------------------------------
# classification noise


def _flip(y: np.ndarray, candidates: np.ndarray, rate: float, rng: np.random.Generator) -> NoisyLabels:
    """Take `candidates` where a Bernoulli(rate) draw says so; the draw comes first in the stream."""
    chosen = rng.random(len(y)) < rate
    noisy = np.where(chosen, candidates, y)
    return NoisyLabels(noisy, noisy != y)


def symmetric(labels, rate: float, num_classes: int | None = None, *, seed: int = 0,
              exclude_true: bool = False) -> NoisyLabels:
    """Uniform label noise.

    With probability `rate` each label is replaced by a class drawn uniformly from the `C` classes;
    the draw may return the true class (IMAE paper Sec. 4, Data Parameters paper Sec. 4.2), so the
    expected realised rate is `rate * (C - 1) / C`. With `exclude_true=True` the new class is drawn
    among the `C - 1` other classes and the expected realised rate is `rate`.

    Args:
        labels: clean labels, shape `(N,)`, integers in `[0, num_classes)`.
        rate: probability of replacement, in `[0, 1]`.
        num_classes: `C`; default `max(labels) + 1`.
        seed: seed of `numpy.random.default_rng`.
        exclude_true: draw only among the other classes.
    """
    rate = _check_rate(rate)
    rng = _check_seed(seed)
    y = _as_labels(labels)
    c = _resolve_classes(y, num_classes, 2 if exclude_true else 1)
    chosen = rng.random(len(y)) < rate
    if exclude_true:
        candidates = (y + rng.integers(1, c, size=len(y))) % c
    else:
        candidates = rng.integers(0, c, size=len(y))
    noisy = np.where(chosen, candidates, y)
    return NoisyLabels(noisy, noisy != y)


def pair_flip(labels, rate: float, num_classes: int | None = None, *, seed: int = 0) -> NoisyLabels:
    """Pair flipping: `y -> (y + 1) mod C` with probability `rate` (expected realised rate `rate`).

    Args:
        labels: clean labels, shape `(N,)`, integers in `[0, num_classes)`.
        rate: probability of a flip, in `[0, 1]`.
        num_classes: `C` (at least 2); default `max(labels) + 1`.
        seed: seed of `numpy.random.default_rng`.
    """
    rate = _check_rate(rate)
    rng = _check_seed(seed)
    y = _as_labels(labels)
    c = _resolve_classes(y, num_classes, 2)
    return _flip(y, (y + 1) % c, rate, rng)


def _map_array(class_map, c_min: int) -> np.ndarray:
    """`class_map` (dict `{source: target}` or a sequence `target = class_map[source]`) as an array."""
    if isinstance(class_map, Mapping):
        items = list(class_map.items())
    elif isinstance(class_map, (Sequence, np.ndarray)) and not isinstance(class_map, (str, bytes)):
        items = list(enumerate(class_map))
    else:
        raise ValueError(f"class_map must be a dict {{source: target}} or a sequence of targets; got {type(class_map).__name__}")
    for src, dst in items:
        for v in (src, dst):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"class_map must map class indices (ints >= 0) to class indices; got {src!r}: {dst!r}")
    size = max([c_min] + [int(max(s, d)) + 1 for s, d in items])
    table = np.arange(size, dtype=np.int64)
    for src, dst in items:
        table[int(src)] = int(dst)
    return table


def asymmetric(labels, rate: float, class_map, *, seed: int = 0, num_classes: int | None = None) -> NoisyLabels:
    """Class-dependent flips: `y -> class_map[y]` with probability `rate`.

    Classes absent from `class_map` (or mapped to themselves) are never changed, so the expected
    realised rate is `rate` times the fraction of samples whose class the map moves.

    Args:
        labels: clean labels, shape `(N,)`.
        rate: probability of a flip for a mapped class, in `[0, 1]`.
        class_map: `{source: target}`, or a sequence whose item `i` is the target of class `i`;
            `CIFAR10_MAP` and `MNIST_MAP` are Patrini et al.'s (2017).
        seed: seed of `numpy.random.default_rng`.
        num_classes: if given, labels and the map's classes must lie in `[0, num_classes)`.
    """
    rate = _check_rate(rate)
    rng = _check_seed(seed)
    y = _as_labels(labels)
    c = _resolve_classes(y, num_classes)
    table = _map_array(class_map, c)
    if num_classes is not None and len(table) > c:
        raise ValueError(f"class_map must map classes in [0, num_classes={c}); it names class {len(table) - 1}")
    return _flip(y, table[y], rate, rng)


def _check_matrix(matrix, c_min: int) -> np.ndarray:
    t = np.asarray(matrix, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"matrix must be square (C, C); got shape {t.shape}")
    if t.shape[0] < c_min:
        raise ValueError(f"matrix must be at least ({c_min}, {c_min}) to cover the labels; got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("matrix must be finite")
    if np.any(t < 0):
        raise ValueError(f"matrix must be non-negative; got a minimum of {t.min():g}")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(~np.isclose(sums, 1.0, rtol=0.0, atol=1e-6))
    if bad.size:
        raise ValueError(
            f"matrix must be row-stochastic (rows = true class, each summing to 1); row {bad[0]} sums to {sums[bad[0]]:.6g}")
    return t


def from_matrix(labels, matrix, *, seed: int = 0) -> NoisyLabels:
    """Noise from a transition matrix: `matrix[i, j] = P(noisy = j | true = i)`.

    Rows are the true class (the orientation of Patrini et al. 2017 and most deep-learning code);
    each row must be non-negative and sum to 1 (to within 1e-6).

    Args:
        labels: clean labels, shape `(N,)`, integers in `[0, C)`.
        matrix: `(C, C)` row-stochastic, `C >= max(labels) + 1`.
        seed: seed of `numpy.random.default_rng`.
    """
    rng = _check_seed(seed)
    y = _as_labels(labels)
    top = int(y.max()) + 1 if y.size else 0
    t = _check_matrix(matrix, top)
    cum = np.cumsum(t, axis=1)
    # Scaling the uniform draw by the row's own total keeps zero-probability classes at zero even
    # when floating-point cumsums end a little below 1.
    u = rng.random(len(y))
    noisy = np.empty_like(y)
    for k in np.unique(y):
        sel = y == k
        noisy[sel] = np.searchsorted(cum[k], u[sel] * cum[k, -1], side="right")
    np.minimum(noisy, t.shape[0] - 1, out=noisy)
    return NoisyLabels(noisy, noisy != y)


# ---------------------------------------------------------------------------------------------------
# regression noise


def regression(targets, rate: float, low: float, high: float, *, seed: int = 0) -> NoisyLabels:
    """Regression noise: with probability `rate` a target is replaced by `Uniform[low, high]`.

    The SuperLoss paper (Sec. 3.2) corrupts digit-regression targets with draws in [1, 10].
    `mask` marks the replaced samples (a draw that happens to equal the old target still counts).

    Args:
        targets: real targets, shape `(N,)` (any numeric dtype; a float dtype is kept, integers
            become float64).
        rate: probability of replacement, in `[0, 1]`.
        low: the lower end of the range of the replacement draws, `low <= high`, finite.
        high: the upper end of the range of the replacement draws, finite.
        seed: seed of `numpy.random.default_rng`.
    """
    rate = _check_rate(rate)
    rng = _check_seed(seed)
    y = _as_1d(targets, "targets", np.number, "", "be numeric; got dtype {dtype}")
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(f"low and high must be numbers; got {low!r}, {high!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"low and high must be finite with low <= high; got low={low}, high={high}")
    out_dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64
    chosen = rng.random(len(y)) < rate
    draws = rng.uniform(low, high, size=len(y))
    noisy = np.where(chosen, draws, y).astype(out_dtype)
    return NoisyLabels(noisy, chosen)


# ---------------------------------------------------------------------------------------------------
# user-given noise


def _read_csv_labels(path: str) -> np.ndarray:
    values: list[int] = []
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = [(i, line.strip()) for i, line in enumerate(fh, 1)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the labels as UTF-8") from None
    lines = [(i, s) for i, s in lines if s]
    for k, (lineno, text) in enumerate(lines):
        if "," in text or ";" in text or "\t" in text:
            raise ValueError(f"{path}: line {lineno}: expected one label per line (one column); got {text!r}")
        try:
            number = float(text)
        except ValueError:
            if k == 0:  # a header
                continue
            raise ValueError(f"{path}: line {lineno}: expected an integer label; got {text!r}") from None
        if not number.is_integer():
            raise ValueError(f"{path}: line {lineno}: expected an integer label; got {text!r}")
        values.append(int(number))
    return np.asarray(values, dtype=np.int64)


def from_file(path, labels=None, *, num_classes: int | None = None) -> NoisyLabels:
    """Noisy labels given in a file, one per training sample in training-set order.

    `.npy`: a 1-D integer array (or `(N, 1)`; integral floats are accepted), read without pickle.
    `.csv`: one column, one label per line, an optional header line.

    Args:
        path: the file.
        labels: the true labels, if known: the file must have as many labels, and `mask` marks where
            they differ. Without them `mask` is all `False` (the corruption is unknown) and
            `rate` is 0.
        num_classes: if given, every label must lie in `[0, num_classes)`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"noisy-label file {path!r} not found (expected a .npy or .csv file, one label per training sample)")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a readable .npy array of labels ({exc})") from None
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D array of labels; got shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"{path}: expected integer labels; got non-integral values")
            arr = arr.astype(np.int64)
    elif ext == ".csv":
        arr = _read_csv_labels(path)
    else:
        raise ValueError(f"noisy-label file must be .npy or .csv; got {path!r}")
    try:
        noisy = _as_labels(arr, name=f"labels in {path}")
        if num_classes is not None:
            _resolve_classes(noisy, num_classes, name=f"labels in {path}")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    noisy = noisy.copy()
    if labels is None:
        return NoisyLabels(noisy, np.zeros(len(noisy), dtype=bool))
    y = _as_labels(labels)
    if len(y) != len(noisy):
        raise ValueError(f"{path} has {len(noisy)} labels but the training set has {len(y)} samples")
    return NoisyLabels(noisy, noisy != y)


# ---------------------------------------------------------------------------------------------------
# dispatch


def apply(kind: str, labels, rate: float, *, num_classes: int, seed: int = 0, path=None,
          class_map=None) -> NoisyLabels:
    """Noise of kind `kind` (one of `KINDS`).

    - `'none'`: the labels unchanged (a copy), mask all `False`;
    - `'symmetric'`: `symmetric` (the new class may be the true one);
    - `'pair'`: `pair_flip`;
    - `'asymmetric'`: `asymmetric` with `class_map`; by default `MNIST_MAP`
      (digits, MNIST); pass `CIFAR10_MAP` for CIFAR-10. Needs 10 classes with a default map;
    - `'file'`: `from_file` on `path`; `rate` is then not used.
    """
    if kind not in KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(KINDS)}; got {kind!r}")
    num_classes = _check_num_classes(num_classes)
    if kind != "file":
        rate = _check_rate(rate)
    if kind == "none":
        y = _as_labels(labels)
        _resolve_classes(y, num_classes)
        return NoisyLabels(y.copy(), np.zeros(len(y), dtype=bool))
    if kind == "symmetric":
        return symmetric(labels, rate, num_classes, seed=seed)
    if kind == "pair":
        return pair_flip(labels, rate, num_classes, seed=seed)
    if kind == "asymmetric":
        if class_map is None:
            if num_classes != 10:
                raise ValueError(f"asymmetric noise needs a class_map for {num_classes} classes (the default maps are for 10)")
            class_map = MNIST_MAP
        return asymmetric(labels, rate, class_map, seed=seed, num_classes=num_classes)
    if path is None:
        raise ValueError("noise kind 'file' needs path (the noisy-label file, .npy or .csv)")
    return from_file(path, labels, num_classes=num_classes)
