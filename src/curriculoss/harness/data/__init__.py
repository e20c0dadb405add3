"""Data sets as numpy arrays, read from local files only (nothing is downloaded).

One module per format: `builtin` (digits),
`idx`, `cifar`,
`imagefolder`, `tabular` (npz, csv);
this module holds `Dataset`, the registry `DATASETS` and `load`, which checks and
normalises whatever a reader returns. Besides the data sets, `npzfile`
reads `.npz` archives lazily, each member's size checked before it is inflated, and
`signals` reads a run's `signals.npz` that way for `curriculoss flag`.

`load` returns a `Dataset` of float32 inputs and int64 labels (float32 targets for
regression). The readers:

- `digits`: scikit-learn's embedded 8x8 digits (1797 images), the offline default. A deterministic
  stratified split keeps 1/4 for testing (`train_test_split(stratify=y, random_state=0)`:
  1347 train, 450 test). Images `(N, 1, 8, 8)`.
- `idx`: an MNIST-layout directory (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`): MNIST,
  Fashion-MNIST, KMNIST. The IDX headers are parsed here: magic number, dimensions, the file's length
  against them (truncation) and matching image and label counts are checked, and errors name the
  file. Images `(N, 1, H, W)`.
- `cifar10`: the binary version (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`)
  or the python version (`data_batch_1` .. `data_batch_5`, `test_batch`); `data_dir` is the
  folder holding them or its parent (`cifar-10-batches-bin` / `cifar-10-batches-py` inside).
  The python version's pickles are read by `RestrictedUnpickler`, which admits only the numpy
  array reconstruction the format needs; any other global (`os.system`, `builtins.eval`, ...)
  raises `UnsafePickleError` before it is resolved, so nothing is executed.
  Images `(N, 3, 32, 32)`.
- `cifar100`: CIFAR-100's python version (`train` and `test` pickles with `fine_labels`, 100
  classes), in `data_dir` or its `cifar-100-python` sub-folder; the same restricted unpickler.
- `imagefolder`: one sub-folder per class of image files (PNG, JPEG, BMP, GIF, WebP, TIFF), with
  `train` and `test` sub-folders when present, else the split below; decoded with Pillow (the
  `image` extra) to RGB and resized to `image_size` x `image_size`. With `stream=True` the
  arrays are `ImageFiles` (the files, decoded per batch
  during training; the same values). See `curriculoss.harness.data.imagefolder`.
- `npz`: a `.npz` file with arrays `x`, `y` and optionally `x_test`, `y_test`; `x` of any
  shape `(N, ...)`. Read without pickle.
- `csv`: `data_dir` is a CSV file (the training set) or a directory with `train.csv` and
  optionally `test.csv`; numeric columns, the last one the label (or regression target), an optional
  header line.

Where no test split is given (`npz` without `x_test`, `csv` without a test file) 20 % of the
training set is split off deterministically (stratified for classification where every class has at
least two samples, `random_state=0`).

Normalisation: image inputs (digits, idx, cifar10, cifar100, imagefolder) are scaled to [0, 1] and then standardised per
channel by the *training* set's mean and standard deviation (the statistics of the samples kept after
`limit`; for imagefolder from exact integer pixel moments, so that a streamed set gets the same
bits), the usual practice for MNIST and CIFAR; the statistics are kept in
`Dataset.normalisation` (the padding of `curriculoss.harness.augment.crop_flip` needs them). `npz` and `csv` features are used as given
(standardise them beforehand if their scales differ).

A `data_dir` that is neither a regular file nor a directory (`/dev/zero`, a FIFO) is refused before
it is opened, and so is a data set whose samples have no features (IDX images of 0x0 pixels).

Checks before training on anything: labels are class indices `0..C-1` with `C` the largest label
+ 1, at most `MAX_CLASSES`, and at least half of the classes `0..C-1` must occur (one corrupt
label, such as an IDX label byte of 255 among MNIST's digits, is refused instead of making 256
classes); features, and regression targets, must be finite *after* their conversion to float32.
Sizes declared by a file are checked against what the file can hold before anything is inflated or
allocated: an IDX header against the file's length (or the most a gzip file of that length can
inflate to), the image count against the label count, each used `.npz` member's `.npy` header
against its zip entry (members other than `x`, `y`, `x_test`, `y_test` are never read), and
a CIFAR-10 pickle may build arrays only the way numpy pickles them.

Tasks: `task='classification'` (labels int64 in `[0, num_classes)`) or `'regression'` (one
output, target float32, `num_classes=None`; for digits and idx the target is the digit's value, the
SuperLoss paper's digit regression, Sec. 3.2). `limit` keeps the first `limit` training samples.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curriculoss.harness.data._common import EXPECTED, check_file_or_dir, file_kind
from curriculoss.harness.data.builtin import _digits
from curriculoss.harness.data.cifar import RestrictedUnpickler, UnsafePickleError, _cifar10, _cifar100
from curriculoss.harness.data.idx import _idx_dir, read_idx
from curriculoss.harness.data.tabular import _csv, _npz

__all__ = ["Dataset", "load", "DATASETS", "TASKS", "EXPECTED", "file_kind", "read_idx", "RestrictedUnpickler",
           "UnsafePickleError"]

def _imagefolder(path: Path, task: str, options: dict):
    from curriculoss.harness.data.imagefolder import read_image_folder  # Pillow only when used

    return read_image_folder(path, **options)


#: name -> reader(data_dir as a `Path`, or `None` for digits; task; imagefolder's options) returning
#: `(x_train, y_train, x_test, y_test)` (imagefolder: and the images' pixel moments). A new format is its
#: module and one line here (and its expected layout in `_common`).
READERS = {
    "digits": lambda path, task, options: _digits(),
    "idx": lambda path, task, options: _idx_dir(path),
    "cifar10": lambda path, task, options: _cifar10(path),
    "cifar100": lambda path, task, options: _cifar100(path),
    "imagefolder": _imagefolder,
    "npz": lambda path, task, options: _npz(path, task),
    "csv": lambda path, task, options: _csv(path, task),
}
#: The names `load` knows.
DATASETS = tuple(READERS)
TASKS = ("classification", "regression")
#: The image sets standardised per channel by their training statistics (imagefolder by exact moments).
_IMAGES = ("digits", "idx", "cifar10", "cifar100")
#: The sets whose class count is fixed by the format, whatever labels occur.
_CLASSES = {"cifar10": 10, "cifar100": 100}


@dataclass
class Dataset:
    """A data set split into training and test arrays.

    Attributes:
        x_train, x_test: float32 inputs, `(N, C, H, W)` for images or `(N, D)` for features (a
            streamed imagefolder: `ImageFiles`).
        y_train, y_test: int64 class indices (classification) or float32 targets (regression), `(N,)`.
        num_classes: the number of classes, or `None` for regression.
        input_shape: the shape of one sample, `x_train.shape[1:]`.
        name: the reader's name (`'digits'`, `'idx'`, ...).
        normalisation: the per-channel `(mean, std)` (float32, shape `(C,)`) the images were
            standardised with (raw pixels in [0, 1]), or `None` for features used as given.
    """

    x_train: np.ndarray  # or ImageFiles (streamed)
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    input_shape: tuple[int, ...]
    name: str
    normalisation: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")


# ---------------------------------------------------------------------------------------------------
# public entry point


@np.errstate(over="ignore")  # values beyond float32's range are reported as non-finite, once, by name
def load(name: str, *, data_dir: str | os.PathLike | None = None, task: str = "classification",
         limit: int | None = None, image_size: int = 32, skip_bad_images: bool = False,
         workers: int = 0, stream: bool | None = False, memory: int | None = None) -> Dataset:
    """Load the data set `name` (one of `DATASETS`) for `task` (one of `TASKS`).

    Args:
        name: `'digits'` (default of the command line, needs no files), `'idx'`, `'cifar10'`,
            `'npz'` or `'csv'`.
        data_dir: the directory or file to read (required for everything but `digits`).
        task: `'classification'` or `'regression'` (the latter not for `cifar10`).
        limit: keep only the first `limit` training samples (the test set is kept whole).
        image_size: `imagefolder` only: the side every image is resized to.
        skip_bad_images: `imagefolder` only: skip unreadable images (with a count on stderr)
            instead of raising an error naming the file.
        workers: `imagefolder` only: decode with this many `DataLoader` worker processes.
        stream: `imagefolder` only: `True` keeps the files, not the pixels (`x_train` and
            `x_test` are `ImageFiles`, decoded per batch
            by the training loop); `None` streams when the decoded set exceeds `memory / 4` bytes.
        memory: the bytes available for the decoded set (`stream=None` only).

    Raises:
        ValueError: an unknown name or task, a bad `limit`, malformed files (the message names the file).
        FileNotFoundError: a missing directory or file (the message names the path and what was expected).
    """
    _check_request(name, data_dir, task, limit)
    options = {"image_size": image_size, "skip_bad_images": skip_bad_images, "workers": workers, "stream": stream,
               "memory": memory}
    x_tr, y_tr, x_te, y_te, *moments = READERS[name](None if data_dir is None else Path(data_dir), task, options)
    where = name if data_dir is None else os.fspath(data_dir)
    if math.prod(x_tr.shape[1:]) == 0:
        raise ValueError(f"{where}: each sample has shape {tuple(x_tr.shape[1:])}: no features to learn from")
    if task == "classification":
        y_tr, y_te = _check_class_labels(y_tr, where, "training"), _check_class_labels(y_te, where, "test")
        num_classes: int | None = _CLASSES.get(name) or _class_count(y_tr, y_te, where)
    else:
        y_tr, y_te = y_tr.astype(np.float32), y_te.astype(np.float32)
        _check_finite(where, "regression targets", y_tr, y_te)
        num_classes = None

    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    normalisation = None
    if name == "imagefolder":
        from curriculoss.harness.data.imagefolder import ImageFiles, moment_stats

        # Exact integer statistics: the same whether the images are in memory or streamed.
        normalisation = moment_stats(moments[0][:len(y_tr)], image_size * image_size) if len(y_tr) else None
        if isinstance(x_tr, ImageFiles):
            x_tr = ImageFiles(x_tr.paths, image_size, normalisation)
            x_te = ImageFiles(x_te.paths, image_size, normalisation)
            return Dataset(x_tr, y_tr, x_te, y_te, num_classes, tuple(x_tr.shape[1:]), name, normalisation)
        x_tr, x_te = _standardise(x_tr, x_te, given=normalisation)
    elif name in _IMAGES:
        x_tr, x_te, normalisation = _standardise(x_tr, x_te, stats=True)
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    # after the conversion: a float64 1e300 is finite in the file and inf in float32
    _check_finite(where, "features", x_tr, x_te)
    return Dataset(x_tr, y_tr, x_te, y_te, num_classes, tuple(int(s) for s in x_tr.shape[1:]), name, normalisation)


def _check_request(name: str, data_dir, task: str, limit) -> None:
    """The arguments of `load`, before anything is read."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive int or None; got {limit!r}")
    if name in ("cifar10", "cifar100", "imagefolder") and task == "regression":
        raise ValueError(f"task 'regression' is for digits, idx, npz and csv; {name} is classification only")
    if name != "digits":
        if data_dir is None:
            raise ValueError(f"data_dir is required for dataset {name!r}")
        if not os.path.exists(data_dir):
            raise FileNotFoundError(f"data_dir {os.fspath(data_dir)!r} not found (expected {EXPECTED[name]})")
        check_file_or_dir(data_dir, EXPECTED[name])


#: The largest class count `load` accepts; a larger label is a corrupt one (and would size the
#: model's output layer and the noise matrices: 1e9 classes is a terabyte allocation).
MAX_CLASSES = 1 << 20


def _check_class_labels(y: np.ndarray, name: str, split: str) -> np.ndarray:
    y = np.asarray(y)
    if y.size == 0:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name}: {split} labels must be integer class indices for classification "
                             f"(use task='regression' for real targets)")
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        raise ValueError(f"{name}: {split} labels must be integer class indices; got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name}: {split} labels must be class indices >= 0; got {y.min()}")
    # In the labels' own dtype (a uint64 >= 2^63 would wrap to a negative int64 below), as a Python int.
    hi = int(y.max())
    if hi >= MAX_CLASSES:
        raise ValueError(f"{name}: {split} label {hi} would mean {hi + 1} classes (at most {MAX_CLASSES} are "
                         f"supported); labels must be class indices 0..C-1")
    return y.astype(np.int64)


def _class_count(y_train: np.ndarray, y_test: np.ndarray, name: str) -> int:
    """C = largest label + 1, refused when fewer than half of the classes 0..C-1 occur in the data
    set: one corrupt label (an IDX label byte of 255 among MNIST's 0..9) would otherwise silently make
    256 classes. np.unique sorts: no allocation of the size of C."""
    both = np.concatenate([y_train, y_test])
    if both.size == 0:
        return 0
    count = int(both.max()) + 1
    present = len(np.unique(both))
    if 2 * present < count:
        raise ValueError(f"{name}: the labels span 0..{count - 1} ({count} classes) but only {present} distinct "
                         f"labels occur; labels must be class indices 0..C-1 (a corrupt label, e.g. "
                         f"{int(both.max())}?)")
    return count


def _check_finite(name: str, what: str, train: np.ndarray, test: np.ndarray) -> None:
    for split, a in (("training", train), ("test", test)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: {split} {what} contain NaN or infinite values (in float32: values "
                             f"beyond +-3.4e38 overflow)")


def _standardise(x_train: np.ndarray, x_test: np.ndarray, stats: bool = False, given=None):
    """Per-channel (axis 1) standardisation by the training set's statistics, in float32; with
    `stats` also the `(mean, std)` used, shape `(C,)`; `given`: use these `(mean, std)`."""
    x_train = x_train.astype(np.float32, copy=False)
    x_test = x_test.astype(np.float32, copy=False)
    if len(x_train) == 0:
        return (x_train, x_test, None) if stats else (x_train, x_test)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    if given is not None:
        mean, std = (np.asarray(a, np.float32).reshape(shape) for a in given)
    else:
        axes = (0,) + tuple(range(2, x_train.ndim))
        # float64 accumulation: a float32 sum over 150M CIFAR values loses digits.
        mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
        std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
        std[std == 0] = 1.0
        mean, std = mean.astype(np.float32), std.astype(np.float32)
    if stats:
        return (x_train - mean) / std, (x_test - mean) / std, (mean.reshape(-1), std.reshape(-1))
    return (x_train - mean) / std, (x_test - mean) / std
