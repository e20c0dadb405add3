"""The CIFAR-10 (binary and python versions) and CIFAR-100 (python version) readers; the python
version's pickles go through `RestrictedUnpickler`, which resolves only numpy's array
reconstruction."""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from curriculoss.harness.data._common import EXPECTED


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
    """Stands for `numpy.ndarray` in a restricted pickle; calling it is refused."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self._name}: the pickle calls numpy.ndarray(...) directly (uninitialised memory "
                                f"of a size it chooses), which a CIFAR-10 batch never does; refused")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10's python batches: it resolves only numpy's array reconstruction.

    Admitted globals: `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct`,
    `numpy.ndarray` and `numpy.dtype`. Anything else raises `UnsafePickleError` (a
    `pickle.UnpicklingError` and a `ValueError`) naming the file and the global.
    """

    def __init__(self, file, *, name: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self._name = name
        self._ndarray = _NDArrayToken(name)

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return self._reconstruct
        if module == "numpy" and name == "ndarray":
            # A token, not the class: called directly, `numpy.ndarray(shape)` would hand back
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
    raise FileNotFoundError(f"no CIFAR-10 batches in {str(root)!r} (expected {EXPECTED['cifar10']})")


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
