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
- ``npz``: a ``.npz`` file with arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``; ``x`` of any
  shape ``(N, ...)``. Read without pickle.
- ``csv``: ``data_dir`` is a CSV file (the training set) or a directory with ``train.csv`` and
  optionally ``test.csv``; numeric columns, the last one the label (or regression target), an optional
  header line.

Where no test split is given (``npz`` without ``x_test``, ``csv`` without a test file) 20 % of the
training set is split off deterministically (stratified for classification where every class has at
least two samples, ``random_state=0``).

Normalisation: image inputs (digits, idx, cifar10) are scaled to [0, 1] and then standardised per
channel by the *training* set's mean and standard deviation (the statistics of the samples kept after
``limit``), the usual practice for MNIST and CIFAR. ``npz`` and ``csv`` features are used as given
(standardise them beforehand if their scales differ).

Tasks: ``task='classification'`` (labels int64 in ``[0, num_classes)``) or ``'regression'`` (one
output, target float32, ``num_classes=None``; for digits and idx the target is the digit's value, the
SuperLoss paper's digit regression, Sec. 3.2). ``limit`` keeps the first ``limit`` training samples.
"""
from __future__ import annotations

import gzip
import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load", "DATASETS", "TASKS", "read_idx", "RestrictedUnpickler", "UnsafePickleError"]

#: The names :func:`load` knows.
DATASETS = ("digits", "idx", "cifar10", "npz", "csv")
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
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    input_shape: tuple[int, ...]
    name: str

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")


# ---------------------------------------------------------------------------------------------------
# public entry point


def load(name: str, *, data_dir: str | os.PathLike | None = None, task: str = "classification",
         limit: int | None = None) -> Dataset:
    """Load the data set ``name`` (one of :data:`DATASETS`) for ``task`` (one of :data:`TASKS`).

    Args:
        name: ``'digits'`` (default of the command line, needs no files), ``'idx'``, ``'cifar10'``,
            ``'npz'`` or ``'csv'``.
        data_dir: the directory or file to read (required for everything but ``digits``).
        task: ``'classification'`` or ``'regression'`` (the latter not for ``cifar10``).
        limit: keep only the first ``limit`` training samples (the test set is kept whole).

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
    if name == "cifar10" and task == "regression":
        raise ValueError("task 'regression' is for digits, idx, npz and csv; cifar10 is classification only")
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
    elif name == "npz":
        x_tr, y_tr, x_te, y_te = _npz(Path(data_dir), task)
    else:
        x_tr, y_tr, x_te, y_te = _csv(Path(data_dir), task)

    if task == "classification":
        y_tr, y_te = _check_class_labels(y_tr, name, "training"), _check_class_labels(y_te, name, "test")
        num_classes: int | None = 10 if name == "cifar10" else int(max(y_tr.max(initial=-1), y_te.max(initial=-1))) + 1
    else:
        y_tr, y_te = y_tr.astype(np.float32), y_te.astype(np.float32)
        num_classes = None

    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    if name in ("digits", "idx", "cifar10"):
        x_tr, x_te = _standardise(x_tr, x_te)
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    return Dataset(x_tr, y_tr, x_te, y_te, num_classes, tuple(int(s) for s in x_tr.shape[1:]), name)


_EXPECTED = {
    "idx": "a directory with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
           "t10k-labels-idx1-ubyte (each optionally .gz)",
    "cifar10": "a directory with CIFAR-10's data_batch_1..5 and test_batch (binary .bin or python version), "
               "or its parent holding cifar-10-batches-bin or cifar-10-batches-py",
    "npz": "a .npz file with arrays x, y and optionally x_test, y_test",
    "csv": "a CSV file, or a directory with train.csv and optionally test.csv; last column the label",
}


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
    return y.astype(np.int64)


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) standardisation by the training set's statistics, in float32."""
    x_train = x_train.astype(np.float32, copy=False)
    x_test = x_test.astype(np.float32, copy=False)
    if len(x_train) == 0:
        return x_train, x_test
    axes = (0,) + tuple(range(2, x_train.ndim))
    # float64 accumulation: a float32 sum over 150M CIFAR values loses digits.
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
    std[std == 0] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
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


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: cannot decompress ({exc}); the gzip file is corrupt or truncated") from None


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
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
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    magic = int.from_bytes(raw[:4], "big")
    dtype_code, dims = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or dtype_code not in _IDX_DTYPES or dims == 0:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{magic:08X})")
    if ndim is not None and dims != ndim:
        expected = 0x00000800 | ndim
        raise ValueError(f"{path}: wrong magic number 0x{magic:08X}; expected 0x{expected:08X} "
                         f"({'images' if ndim == 3 else 'labels' if ndim == 1 else f'{ndim} dimensions'})")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX file (header needs {header} bytes, file has {len(raw)})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_DTYPES[dtype_code]
    expected_len = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected_len:
        raise ValueError(f"{path}: truncated IDX file: shape {shape} needs {expected_len} bytes, file has {len(raw)}")
    if len(raw) > expected_len:
        raise ValueError(f"{path}: {len(raw) - expected_len} bytes after the data of shape {shape}; the file is not valid IDX")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


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
        images, labels = read_idx(img_path, ndim=3), read_idx(lab_path, ndim=1)
        if len(images) != len(labels):
            raise ValueError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
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


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10's python batches: it resolves only numpy's array reconstruction.

    Admitted globals: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``. Anything else raises :class:`UnsafePickleError` (a
    :class:`pickle.UnpicklingError` and a :class:`ValueError`) naming the file and the global.
    """

    def __init__(self, file, *, name: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self._name = name

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise UnsafePickleError(
            f"{self._name}: the pickle asks for global {module}.{name}, which a CIFAR-10 batch never needs; refused")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._name}: persistent ids are not allowed in a CIFAR-10 batch")


def _cifar_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
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
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys 'data' and 'labels'; got {sorted(map(str, obj))}")
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


# ---------------------------------------------------------------------------------------------------
# npz and csv


def _npz(path: Path, task: str):
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a file (expected {_EXPECTED['npz']})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError) as exc:
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


def _check_xy(path: Path, x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{path}: {xname} must have shape (N, ...) with at least 2 dimensions; got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: {yname} must have shape ({len(x)},) to match {xname}; got {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)) or x.dtype == bool:
        raise ValueError(f"{path}: {xname} and {yname} must be numeric; got {x.dtype} and {y.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {xname} contains NaN or infinite values")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows: list[list[float]] = []
    width = None
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
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
