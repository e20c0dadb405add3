"""The tabular readers: `.npz` archives (read without pickle, each member's declared size checked
first) and numeric CSV files."""
from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from curriculoss.harness.data._common import EXPECTED, _GZIP_MAX_RATIO, _split, check_file_or_dir



def _npz(path: Path, task: str):
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a file (expected {EXPECTED['npz']})")
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
        if not train.exists():
            raise FileNotFoundError(f"{str(train)!r} not found (expected {EXPECTED['csv']})")
        for part in (train, test) if test.exists() else (train,):
            check_file_or_dir(part, EXPECTED["csv"])
            if part.is_dir():
                raise ValueError(f"{part}: a directory, not a CSV file (expected {EXPECTED['csv']})")
    else:
        train, test = path, None
    x, y = _read_csv(train)
    if test is not None and test.is_file():
        x_te, y_te = _read_csv(test)
        if x_te.shape[1] != x.shape[1]:
            raise ValueError(f"{test} has {x_te.shape[1]} feature columns but {train} has {x.shape[1]}")
        return x, y, x_te, y_te
    return _split(x, y, task == "classification")
