"""Data sets as numpy arrays, read from local files only (nothing is downloaded).

:func:`load` returns a :class:`Dataset` of float32 inputs and int64 labels (float32 targets for
regression). The readers:

- ``digits``: scikit-learn's embedded 8x8 digits (1797 images), the offline default. A deterministic
  stratified split keeps 1/4 for testing (``train_test_split(stratify=y, random_state=0)``:
  1347 train, 450 test). Images ``(N, 1, 8, 8)``.
- ``idx``: an MNIST-layout directory (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``): MNIST,
  Fashion-MNIST, KMNIST. The IDX headers are parsed here: magic number, dimensions, the file's length
  against them (truncation) and matching image and label counts are checked, and errors name the
  file. Images ``(N, 1, H, W)``.
- ``cifar10``: the binary version (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``)
  or the python version (``data_batch_1`` .. ``data_batch_5``, ``test_batch``); ``data_dir`` is the
  folder holding them or its parent (``cifar-10-batches-bin`` / ``cifar-10-batches-py`` inside).
  The python version's pickles are read by :class:`RestrictedUnpickler`, which admits only the numpy
  array reconstruction the format needs; any other global (``os.system``, ``builtins.eval``, ...)
  raises :class:`UnsafePickleError` before it is resolved, so nothing is executed.
  Images ``(N, 3, 32, 32)``.
- ``cifar100``: CIFAR-100's python version (``train`` and ``test`` pickles with ``fine_labels``, 100
  classes), in ``data_dir`` or its ``cifar-100-python`` sub-folder; the same restricted unpickler.
- ``imagefolder``: one sub-folder per class of image files (PNG, JPEG, BMP, GIF, WebP, TIFF), with
  ``train`` and ``test`` sub-folders when present, else the split below; decoded with Pillow (the
  ``image`` extra) to RGB and resized to ``image_size`` x ``image_size``. See
  :mod:`curriculoss.imagefolder`.
- ``npz``: a ``.npz`` file with arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``; ``x`` of any
  shape ``(N, ...)``. Read without pickle.
- ``csv``: ``data_dir`` is a CSV file (the training set) or a directory with ``train.csv`` and
  optionally ``test.csv``; numeric columns, the last one the label (or regression target), an optional
  header line.

Where no test split is given (``npz`` without ``x_test``, ``csv`` without a test file) 20 % of the
training set is split off deterministically (stratified for classification where every class has at
least two samples, ``random_state=0``).

Normalisation: image inputs (digits, idx, cifar10, cifar100, imagefolder) are scaled to [0, 1] and then standardised per
channel by the *training* set's mean and standard deviation (the statistics of the samples kept after
``limit``), the usual practice for MNIST and CIFAR; the statistics are kept in
:attr:`Dataset.normalisation` (the padding of :func:`curriculoss.augment.crop_flip` needs them). ``npz`` and ``csv`` features are used as given
(standardise them beforehand if their scales differ).

Checks before training on anything: labels are class indices ``0..C-1`` with ``C`` the largest label
+ 1, at most :data:`MAX_CLASSES`, and at least half of the classes ``0..C-1`` must occur (one corrupt
label, such as an IDX label byte of 255 among MNIST's digits, is refused instead of making 256
classes); features, and regression targets, must be finite *after* their conversion to float32.
Sizes declared by a file are checked against what the file can hold before anything is inflated or
allocated: an IDX header against the file's length (or the most a gzip file of that length can
inflate to), the image count against the label count, each used ``.npz`` member's ``.npy`` header
against its zip entry (members other than ``x``, ``y``, ``x_test``, ``y_test`` are never read), and
a CIFAR-10 pickle may build arrays only the way numpy pickles them.

Tasks: ``task='classification'`` (labels int64 in ``[0, num_classes)``) or ``'regression'`` (one
output, target float32, ``num_classes=None``; for digits and idx the target is the digit's value, the
SuperLoss paper's digit regression, Sec. 3.2). ``limit`` keeps the first ``limit`` training samples.
"""
from __future__ import annotations

import gzip
import importlib
import io
import math
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load", "DATASETS", "TASKS", "read_idx", "RestrictedUnpickler", "UnsafePickleError"]

#: The names :func:`load` knows.
DATASETS = ("digits", "idx", "cifar10", "cifar100", "imagefolder", "npz", "csv")
TASKS = ("classification", "regression")


@dataclass
class Dataset:
    """A data set split into training and test arrays.

    Attributes:
        x_train, x_test: float32 inputs, ``(N, C, H, W)`` for images or ``(N, D)`` for features.
        y_train, y_test: int64 class indices (classification) or float32 targets (regression), ``(N,)``.
        num_classes: the number of classes, or ``None`` for regression.
        input_shape: the shape of one sample, ``x_train.shape[1:]``.
        name: the reader's name (``'digits'``, ``'idx'``, ...).
        normalisation: the per-channel ``(mean, std)`` (float32, shape ``(C,)``) the images were
            standardised with (raw pixels in [0, 1]), or ``None`` for features used as given.
    """

    x_train: np.ndarray
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
         workers: int = 0) -> Dataset:
    """Load the data set ``name`` (one of :data:`DATASETS`) for ``task`` (one of :data:`TASKS`).

    Args:
        name: ``'digits'`` (default of the command line, needs no files), ``'idx'``, ``'cifar10'``,
            ``'npz'`` or ``'csv'``.
        data_dir: the directory or file to read (required for everything but ``digits``).
        task: ``'classification'`` or ``'regression'`` (the latter not for ``cifar10``).
        limit: keep only the first ``limit`` training samples (the test set is kept whole).
        image_size: ``imagefolder`` only: the side every image is resized to.
        skip_bad_images: ``imagefolder`` only: skip unreadable images (with a count on stderr)
            instead of raising an error naming the file.
        workers: ``imagefolder`` only: decode with this many ``DataLoader`` worker processes.

    Raises:
        ValueError: an unknown name or task, a bad ``limit``, malformed files (the message names the file).
        FileNotFoundError: a missing directory or file (the message names the path and what was expected).
    """
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
            raise FileNotFoundError(f"data_dir {os.fspath(data_dir)!r} not found (expected {_EXPECTED[name]})")

    if name == "digits":
        x_tr, y_tr, x_te, y_te = _digits()
    elif name == "idx":
        x_tr, y_tr, x_te, y_te = _idx_dir(Path(data_dir))
    elif name == "cifar10":
        x_tr, y_tr, x_te, y_te = _cifar10(Path(data_dir))
    elif name == "cifar100":
        x_tr, y_tr, x_te, y_te = _cifar100(Path(data_dir))
    elif name == "imagefolder":
        from curriculoss.imagefolder import read_image_folder

        x_tr, y_tr, x_te, y_te = read_image_folder(Path(data_dir), image_size=image_size,
                                                   skip_bad_images=skip_bad_images, workers=workers)
    elif name == "npz":
        x_tr, y_tr, x_te, y_te = _npz(Path(data_dir), task)
    else:
        x_tr, y_tr, x_te, y_te = _csv(Path(data_dir), task)

    where = name if data_dir is None else os.fspath(data_dir)
    if task == "classification":
        y_tr, y_te = _check_class_labels(y_tr, where, "training"), _check_class_labels(y_te, where, "test")
        num_classes: int | None = ({"cifar10": 10, "cifar100": 100}.get(name)
                                   or _class_count(y_tr, y_te, where))
    else:
        y_tr, y_te = y_tr.astype(np.float32), y_te.astype(np.float32)
        _check_finite(where, "regression targets", y_tr, y_te)
        num_classes = None

    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    normalisation = None
    if name in ("digits", "idx", "cifar10", "cifar100", "imagefolder"):
        x_tr, x_te, normalisation = _standardise(x_tr, x_te, stats=True)
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    # after the conversion: a float64 1e300 is finite in the file and inf in float32
    _check_finite(where, "features", x_tr, x_te)
    return Dataset(x_tr, y_tr, x_te, y_te, num_classes, tuple(int(s) for s in x_tr.shape[1:]), name, normalisation)


_EXPECTED = {
    "idx": "a directory with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
           "t10k-labels-idx1-ubyte (each optionally .gz)",
    "cifar10": "a directory with CIFAR-10's data_batch_1..5 and test_batch (binary .bin or python version), "
               "or its parent holding cifar-10-batches-bin or cifar-10-batches-py",
    "cifar100": "a directory with CIFAR-100's python version (train and test), or its parent holding "
                "cifar-100-python",
    "imagefolder": "a directory with one sub-folder of images per class (or train/ and test/ folders of them)",
    "npz": "a .npz file with arrays x, y and optionally x_test, y_test",
    "csv": "a CSV file, or a directory with train.csv and optionally test.csv; last column the label",
}


#: The largest class count :func:`load` accepts; a larger label is a corrupt one (and would size the
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


def _standardise(x_train: np.ndarray, x_test: np.ndarray, stats: bool = False):
    """Per-channel (axis 1) standardisation by the training set's statistics, in float32; with
    ``stats`` also the ``(mean, std)`` used, shape ``(C,)``."""
    x_train = x_train.astype(np.float32, copy=False)
    x_test = x_test.astype(np.float32, copy=False)
    if len(x_train) == 0:
        return (x_train, x_test, None) if stats else (x_train, x_test)
    axes = (0,) + tuple(range(2, x_train.ndim))
    # float64 accumulation: a float32 sum over 150M CIFAR values loses digits.
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
    std[std == 0] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    if stats:
        return (x_train - mean) / std, (x_test - mean) / std, (mean.reshape(-1), std.reshape(-1))
    return (x_train - mean) / std, (x_test - mean) / std


def _split(x: np.ndarray, y: np.ndarray, classification: bool, test_size: float = 0.2):
    """Deterministic split of ``test_size`` (stratified where every class has two samples or more)."""
    from sklearn.model_selection import train_test_split

    if len(y) < 2:
        raise ValueError(f"need at least 2 samples to split off a test set; got {len(y)}")
    stratify = None
    if classification:
        _, counts = np.unique(y, return_counts=True)
        n_test = int(np.ceil(test_size * len(y)))
        if counts.min() >= 2 and n_test >= len(counts) and len(y) - n_test >= len(counts):
            stratify = y
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=0, stratify=stratify)
    return x_tr, y_tr, x_te, y_te


# ---------------------------------------------------------------------------------------------------
# digits


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


# ---------------------------------------------------------------------------------------------------
# IDX (MNIST layout)

_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# Deflate compresses at most about 1032:1, so a gzip file cannot hold more than this many bytes per
# byte of file (with room for the headers): a larger declared size is refused before inflating.
_GZIP_MAX_RATIO = 1100


def _read_idx_stream(path: Path, ndim: int | None, check_shape=None) -> tuple[bytes, bytes]:
    """(header, data) of an IDX file, plain or gzipped, reading no more than the header declares.

    The header is read from the stream first; the data size it declares is checked against what the
    file can hold (its length, or the most that deflate can inflate it to) before the data are read,
    and the data are read with a bounded read (one byte more, to detect trailing bytes). A gzip bomb
    or a header declaring terabytes is refused without being inflated or allocated. ``check_shape``,
    if given, is called with the declared shape before the data are read (and may raise)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise ValueError(f"{path}: truncated IDX file ({len(head)} bytes, no complete header)")
            magic = int.from_bytes(head, "big")
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
                raise ValueError(f"{path}: not an IDX file (magic number 0x{magic:08X})")
            if ndim is not None and head[3] != ndim:
                expected = 0x00000800 | ndim
                raise ValueError(f"{path}: wrong magic number 0x{magic:08X}; expected 0x{expected:08X} "
                                 f"({'images' if ndim == 3 else 'labels' if ndim == 1 else f'{ndim} dimensions'})")
            sizes = fh.read(4 * head[3])
            header = head + sizes
            if len(sizes) < 4 * head[3]:
                raise ValueError(f"{path}: truncated IDX file (header needs {4 + 4 * head[3]} bytes, "
                                 f"file has {len(header)})")
            shape = tuple(int.from_bytes(sizes[4 * i: 4 * i + 4], "big") for i in range(head[3]))
            if check_shape is not None:
                check_shape(shape)
            need = math.prod(shape) * _IDX_DTYPES[head[2]].itemsize  # Python ints: no overflow
            can_hold = size * _GZIP_MAX_RATIO if gz else size - len(header)
            if need > can_hold:
                raise ValueError(f"{path}: truncated IDX file: shape {shape} needs {len(header) + need} bytes, "
                                 f"{'a gzip file of' if gz else 'the file has'} {size} bytes"
                                 f"{' cannot hold that many' if gz else ''}")
            data = fh.read(need + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: cannot decompress ({exc}); the gzip file is corrupt or truncated") from None
    return header, data


def read_idx(path: str | os.PathLike, *, ndim: int | None = None, _check_shape=None) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into a numpy array.

    The header is ``0x00 0x00 <type> <ndim>`` followed by ``ndim`` big-endian uint32 sizes; the data
    follow in C order. ``ndim`` (3 for images, magic 0x00000803; 1 for labels, magic 0x00000801), if
    given, is checked, and so is the file's length against the sizes.

    Raises:
        FileNotFoundError: no such file.
        ValueError: wrong magic number, unexpected dimensions, a truncated or oversized file, or a
            corrupt gzip stream; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} not found")
    header, raw = _read_idx_stream(path, ndim, _check_shape)
    dims = header[3]
    shape = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_DTYPES[header[2]]
    need = math.prod(shape) * dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"{path}: truncated IDX file: shape {shape} needs {len(header) + need} bytes, "
                         f"file has {len(header) + len(raw)}")
    if len(raw) > need:
        raise ValueError(f"{path}: bytes after the data of shape {shape}; the file is not valid IDX")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str, expected: str) -> Path:
    alternatives = (stem, stem.replace("-idx", ".idx"))
    for base in alternatives:
        for candidate in (base, base + ".gz"):
            if (directory / candidate).is_file():
                return directory / candidate
    raise FileNotFoundError(f"{str(directory / stem)!r}[.gz] not found (expected {expected})")


def _idx_dir(directory: Path):
    if not directory.is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory (expected {_EXPECTED['idx']})")
    out = []
    for split in ("train", "t10k"):
        img_path = _find(directory, f"{split}-images-idx3-ubyte", _EXPECTED["idx"])
        lab_path = _find(directory, f"{split}-labels-idx1-ubyte", _EXPECTED["idx"])
        labels = read_idx(lab_path, ndim=1)

        def same_count(shape, labels=labels, img_path=img_path, lab_path=lab_path):
            # checked on the header, before the images (the large file) are inflated
            if shape[0] != len(labels):
                raise ValueError(f"{img_path} has {shape[0]} images but {lab_path} has {len(labels)} labels")

        images = read_idx(img_path, ndim=3, _check_shape=same_count)
        if images.dtype != np.uint8:
            raise ValueError(f"{img_path}: expected unsigned-byte images (type 0x08); got {images.dtype}")
        out += [(images.astype(np.float32) / 255.0)[:, None, :, :], labels.astype(np.int64)]
    if out[0].shape[2:] != out[2].shape[2:]:
        raise ValueError(f"{directory}: training images are {out[0].shape[2:]} but test images are {out[2].shape[2:]}")
    return out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------------------------
# CIFAR-10

_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"
_CIFAR_RECORD = 1 + 3072


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global the CIFAR-10 format does not need (it was not resolved)."""


def _numpy_reconstruct():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's multiarray._reconstruct is not available")


class _NDArrayToken:
    """Stands for ``numpy.ndarray`` in a restricted pickle; calling it is refused."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self._name}: the pickle calls numpy.ndarray(...) directly (uninitialised memory "
                                f"of a size it chooses), which a CIFAR-10 batch never does; refused")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10's python batches: it resolves only numpy's array reconstruction.

    Admitted globals: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``. Anything else raises :class:`UnsafePickleError` (a
    :class:`pickle.UnpicklingError` and a :class:`ValueError`) naming the file and the global.
    """

    def __init__(self, file, *, name: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self._name = name
        self._ndarray = _NDArrayToken(name)

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return self._reconstruct
        if module == "numpy" and name == "ndarray":
            # A token, not the class: called directly, ``numpy.ndarray(shape)`` would hand back
            # uninitialised memory of any size the pickle asks for.
            return self._ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise UnsafePickleError(
            f"{self._name}: the pickle asks for global {module}.{name}, which a CIFAR-10 batch never needs; refused")

    def _reconstruct(self, cls, shape, dtype, *rest):
        # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__ with
        # the shape, dtype and bytes (numpy checks that the bytes fill the shape): only that is allowed.
        if cls is not self._ndarray or not isinstance(shape, tuple) or shape != (0,) or rest:
            raise UnsafePickleError(f"{self._name}: array reconstruction with {shape!r} is not how numpy pickles "
                                    f"an array; refused")
        return _numpy_reconstruct()(np.ndarray, (0,), dtype)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._name}: persistent ids are not allowed in a CIFAR-10 batch")


def _cifar_python_batch(path: Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, name=str(path)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels'; got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(label_key.encode(), obj.get(label_key))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys 'data' and {label_key!r}; got {sorted(map(str, obj))}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072); got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be {len(data)} integers; got {labels.dtype} {labels.shape}")
    return data, labels


def _cifar_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records "
                         f"(truncated or not a CIFAR-10 binary batch)")
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:], records[:, 0]


def _cifar_layout(root: Path) -> tuple[Path, str]:
    for folder in (root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"):
        if (folder / "data_batch_1.bin").is_file():
            return folder, "binary"
        if (folder / "data_batch_1").is_file():
            return folder, "python"
    raise FileNotFoundError(f"no CIFAR-10 batches in {str(root)!r} (expected {_EXPECTED['cifar10']})")


def _cifar10(root: Path):
    folder, kind = _cifar_layout(root)
    ext, reader = (".bin", _cifar_binary_batch) if kind == "binary" else ("", _cifar_python_batch)
    parts = []
    for name in (*_CIFAR_TRAIN, _CIFAR_TEST):
        path = folder / (name + ext)
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found (CIFAR-10 {kind} version: expected "
                                    f"{', '.join(n + ext for n in (*_CIFAR_TRAIN, _CIFAR_TEST))})")
        data, labels = reader(path)
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{path}: CIFAR-10 labels must be in 0..9; got {labels.min()}..{labels.max()}")
        parts.append((data, labels))
    x_tr = np.concatenate([d for d, _ in parts[:-1]])
    y_tr = np.concatenate([lab for _, lab in parts[:-1]]).astype(np.int64)
    x_te, y_te = parts[-1][0], parts[-1][1].astype(np.int64)
    # Rows are 1024 red, 1024 green, 1024 blue values, each image row-major: (N, 3, 32, 32) directly.
    to_images = lambda d: (d.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0))
    return to_images(x_tr), y_tr, to_images(x_te), y_te


def _cifar100(root: Path):
    folder = root / "cifar-100-python" if (root / "cifar-100-python" / "train").is_file() else root
    parts = []
    for name in ("train", "test"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found (CIFAR-100 python version: expected train and test)")
        data, labels = _cifar_python_batch(path, "fine_labels")
        if labels.size and (labels.min() < 0 or labels.max() > 99):
            raise ValueError(f"{path}: CIFAR-100 fine labels must be in 0..99; got {labels.min()}..{labels.max()}")
        parts.append((data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0), labels.astype(np.int64)))
    return parts[0][0], parts[0][1], parts[1][0], parts[1][1]


# ---------------------------------------------------------------------------------------------------
# npz and csv


def _npz(path: Path, task: str):
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a file (expected {_EXPECTED['npz']})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            # only the members used, each after its declared size is checked (a never-used or
            # lying member is not inflated)
            arrays = {k: _npz_member(path, archive, k) for k in _NPZ_MEMBERS if k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {', '.join(missing)}; has {sorted(arrays)} (expected x, y, x_test, y_test)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: give both x_test and y_test, or neither")
    x, y = arrays["x"], arrays["y"]
    _check_xy(path, x, y, "x", "y")
    if "x_test" in arrays:
        x_te, y_te = arrays["x_test"], arrays["y_test"]
        _check_xy(path, x_te, y_te, "x_test", "y_test")
        if x_te.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: x_test samples have shape {x_te.shape[1:]} but x samples {x.shape[1:]}")
        return x.astype(np.float32), y, x_te.astype(np.float32), y_te
    x_tr, y_tr, x_te, y_te = _split(x.astype(np.float32), y, task == "classification")
    return x_tr, y_tr, x_te, y_te


_NPZ_MEMBERS = ("x", "y", "x_test", "y_test")


def _npz_member(path: Path, archive, key: str) -> np.ndarray:
    """One array of an .npz, its .npy header read first: the size it declares must be what the zip
    entry holds, and the entry no larger than deflate can inflate it to, before anything is read."""
    names = archive.zip.namelist()
    info = archive.zip.getinfo(key + ".npy" if key + ".npy" in names else key)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > _GZIP_MAX_RATIO * info.compress_size + 1024:
        raise ValueError(f"{path}: member {key} claims {info.file_size} bytes from {info.compress_size} "
                         f"compressed; the archive is corrupt")
    with archive.zip.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(fh))
        need = math.prod(shape) * dtype.itemsize
        if need > info.file_size - fh.tell():
            raise ValueError(f"{path}: member {key} declares shape {shape} ({need} bytes) but holds "
                             f"{info.file_size - fh.tell()} bytes; the archive is corrupt")
    return archive[key]


def _check_xy(path: Path, x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{path}: {xname} must have shape (N, ...) with at least 2 dimensions; got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: {yname} must have shape ({len(x)},) to match {xname}; got {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)) or x.dtype == bool:
        raise ValueError(f"{path}: {xname} and {yname} must be numeric; got {x.dtype} and {y.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {xname} contains NaN or infinite values")


def _read_text(path: Path) -> str:
    """A text file as UTF-8 (a byte-order mark is skipped); other encodings are an error naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         f"save the CSV as UTF-8") from None


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows: list[list[float]] = []
    width = None
    for lineno, line in enumerate(io.StringIO(_read_text(path)), 1):
        text = line.strip()
        if not text:
            continue
        cells = [c.strip() for c in text.split(",")]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not rows and width is None:  # a header line
                width = len(cells)
                continue
            raise ValueError(f"{path}: line {lineno}: non-numeric value in {text!r}") from None
        if width is None:
            width = len(values)
        if len(values) != width:
            raise ValueError(f"{path}: line {lineno}: {len(values)} columns, expected {width}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    if width < 2:
        raise ValueError(f"{path}: need at least one feature column and the label column; got {width} column")
    table = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(table)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    return table[:, :-1].astype(np.float32), table[:, -1]


def _csv(path: Path, task: str):
    if path.is_dir():
        train, test = path / "train.csv", path / "test.csv"
        if not train.is_file():
            raise FileNotFoundError(f"{str(train)!r} not found (expected {_EXPECTED['csv']})")
    else:
        train, test = path, None
    x, y = _read_csv(train)
    if test is not None and test.is_file():
        x_te, y_te = _read_csv(test)
        if x_te.shape[1] != x.shape[1]:
            raise ValueError(f"{test} has {x_te.shape[1]} feature columns but {train} has {x.shape[1]}")
        return x, y, x_te, y_te
    return _split(x, y, task == "classification")
