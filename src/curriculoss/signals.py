"""A run's per-sample signals on disk: one `.npy` file per table, grown an epoch at a time, read in blocks.

A `curriculoss.recorder.Recorder` given a `path` streams its signals into a folder as each epoch
closes, instead of keeping the `(epochs, N)` tables in memory:

```text
signals/
    loss.npy  confidence.npy  margin.npy   (epochs, N) float32 (or float16): one row per closed epoch
    labels.npy  predicted.npy              (N,) int64, written by Recorder.save
    noise_mask.npy  true_labels.npy ...    (N,) the extras given to Recorder.save
```

Every file is a standard `.npy` (`np.load(path, mmap_mode="r")` reads it). A table's header is written
with a fixed length, so appending an epoch writes one row at the end of the file and rewrites the shape
in the header; an epoch that was written but not yet recorded in the header (a crash in between) is
ignored by every reader and cut off on resume.

`open_signals` reads such a folder (or a `signals.npz`, which it loads whole) as a mapping of
arrays: the per-sample ones in memory, each table as a `Table`, which reads the blocks asked for
through a memory map opened for that read only. Memory stays bounded by the block, whatever the number
of epochs, and the pages read are released when the block is returned.

This module needs numpy only.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["SIGNALS", "Table", "TableWriter", "Signals", "open_signals", "write_array", "is_signals_folder"]

#: The per-epoch tables, each `(epochs, N)`.
SIGNALS = ("loss", "confidence", "margin")
#: The dtypes a table may be stored in.
STORAGE_DTYPES = ("float32", "float16")
#: The dtype kinds of the per-sample arrays of a signals folder (`dtype.kind`; a regression's labels are floats); an extra: any number.
_KINDS = {"labels": "iuf", "predicted": "iu", "true_labels": "iuf", "noise_mask": "biu"}
#: Bytes of a table's `.npy` header (magic, version, length and the padded dictionary): fixed, so
#: that the shape can grow in place.
_HEADER_BYTES = 128
#: Bytes of the file a `Table` maps for one read, at most (whole rows, at least one).
_READ_BYTES = 64 << 20


def _header(dtype: np.dtype, shape: tuple[int, int]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body = text.ljust(_HEADER_BYTES - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data offset of a `.npy` file, from its header alone."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"format version {version}")
            shape, fortran, dtype = read[version](fh)
        except (ValueError, OSError, SyntaxError) as exc:
            raise ValueError(f"{path}: not a .npy file ({exc})") from None
        if fortran:
            raise ValueError(f"{path}: a Fortran-ordered array; expected C order")
        return tuple(shape), dtype, fh.tell()


class TableWriter:
    """Appends rows of `N` values to an `(epochs, N)` `.npy` file.

    Args:
        path: the file; created if missing, else continued (its header says how many rows it holds).
        num_samples: `N`.
        dtype: the stored dtype, `"float32"` or `"float16"`.
    """

    def __init__(self, path: str | os.PathLike, num_samples: int, dtype: str = "float32"):
        if str(dtype) not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}; got {dtype!r}")
        self.path, self.num_samples, self.dtype = Path(path), int(num_samples), np.dtype(dtype)
        self.rows = 0
        if self.path.exists():
            shape, stored, offset = _read_header(self.path)
            if len(shape) != 2 or shape[1] != self.num_samples or stored != self.dtype or offset != _HEADER_BYTES:
                raise ValueError(f"{self.path} holds a {stored} table of shape {shape}; expected (epochs, "
                                 f"{self.num_samples}) {self.dtype} written by curriculoss")
            self.rows = shape[0]

    def append(self, row: np.ndarray) -> None:
        """Write one row after the last recorded one, then record it in the header."""
        row = np.ascontiguousarray(row, dtype=self.dtype)
        if row.shape != (self.num_samples,):
            raise ValueError(f"row must have shape ({self.num_samples},), got {row.shape}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "r+b" if self.path.exists() else "w+b"
        with open(self.path, mode) as fh:
            if mode == "w+b":
                fh.write(_header(self.dtype, (0, self.num_samples)))
            fh.seek(_HEADER_BYTES + self.rows * self.num_samples * self.dtype.itemsize)
            fh.write(row.tobytes())
            fh.flush()
            os.fsync(fh.fileno())  # the row is on disk before the header counts it
            fh.seek(0)
            fh.write(_header(self.dtype, (self.rows + 1, self.num_samples)))
        self.rows += 1

    def truncate(self, rows: int) -> None:
        """Keep the first `rows` rows (those a checkpoint recorded); the file must hold them."""
        if rows > self.rows:
            raise ValueError(f"{self.path} holds {self.rows} epochs; {rows} are needed (the file was replaced or "
                             "cut since the state was saved)")
        if not self.path.exists():
            return
        with open(self.path, "r+b") as fh:
            fh.write(_header(self.dtype, (rows, self.num_samples)))
            fh.truncate(_HEADER_BYTES + rows * self.num_samples * self.dtype.itemsize)
        self.rows = rows


class Table:
    """An `(epochs, N)` table in a `.npy` file, read a block at a time.

    Indexing (`table[rows, columns]`, with integers, slices or index arrays) returns a numpy array;
    the file is memory-mapped for that read only, whole rows of at most 64 MB at a time, so reading a
    block costs the block's memory and no more. `np.asarray(table)` reads the whole table.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shape, self.dtype, self._offset = _read_header(self.path)
        if len(self.shape) != 2:
            raise ValueError(f"{self.path}: shape {self.shape}; expected (epochs, N)")
        if os.path.getsize(self.path) < self._offset + int(np.prod(self.shape)) * self.dtype.itemsize:
            raise ValueError(f"{self.path}: the file is shorter than its header's shape {self.shape} (truncated)")

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Table({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _rows(self, start: int, stop: int) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(stop - start, self.shape[1]),
                         offset=self._offset + start * self.shape[1] * self.dtype.itemsize)

    def __getitem__(self, key) -> np.ndarray:
        rows, columns = key if isinstance(key, tuple) else (key, slice(None))
        picked = np.arange(self.shape[0])[rows]
        if picked.ndim == 0:
            return np.array(self._rows(int(picked), int(picked) + 1)[0, columns])
        per_read = max(1, _READ_BYTES // max(1, self.shape[1] * self.dtype.itemsize))
        parts = []
        for k in range(0, len(picked), per_read):  # runs of rows, each read through its own map
            group = picked[k:k + per_read]
            lo, hi = int(group.min()), int(group.max()) + 1
            if hi - lo > per_read:  # rows far apart: one map each
                parts += [np.array(self._rows(int(r), int(r) + 1)[:, columns]) for r in group]
            else:
                parts.append(np.array(self._rows(lo, hi)[group - lo][:, columns]))
        if not parts:
            return np.empty((0, *np.empty(self.shape[1])[columns].shape), dtype=self.dtype)
        return np.concatenate(parts)

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def write_array(folder: str | os.PathLike, name: str, array: np.ndarray) -> Path:
    """Write `folder/name.npy` atomically (a failed write leaves no partial file and keeps a previous one)."""
    path = Path(folder) / f"{name}.npy"
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_signals_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder of streamed signals (it holds `labels.npy` or a table)."""
    path = Path(path)
    return path.is_dir() and any((path / f"{name}.npy").exists() for name in ("labels", *SIGNALS))


class Signals(dict):
    """The arrays of a signals folder by name: each table a `Table`, each per-sample array in memory.

    Args:
        folder: a folder written by a streaming `Recorder` and its `save`.

    Raises:
        ValueError: `labels.npy` is missing (the run has not been saved), or a file's dtype or shape
            does not fit; the message names the file.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder)
        labels_path = self.path / "labels.npy"
        if not labels_path.exists():
            raise ValueError(f"{self.path}: no labels.npy (Recorder.save writes it when the run ends; the run is "
                             "unfinished, or this is not a signals folder)")
        super().__init__()
        n = self._per_sample("labels", None, _KINDS["labels"])
        for file in sorted(self.path.glob("*.npy")):
            name = file.stem
            if name in SIGNALS:
                self[name] = self._table(file, n)
            elif name != "labels":
                self._per_sample(name, n, _KINDS.get(name, "biuf"))
        epochs = {t.shape[0] for t in self.values() if isinstance(t, Table)}
        if len(epochs) > 1:
            raise ValueError(f"{self.path}: the tables hold different numbers of epochs {sorted(epochs)}")

    def _per_sample(self, name: str, n: int | None, kinds: str) -> int:
        array = np.load(self.path / f"{name}.npy", allow_pickle=False)
        if array.dtype.kind not in kinds or array.ndim != 1 or (n is not None and array.shape[0] != n):
            raise ValueError(f"{self.path / (name + '.npy')}: {array.dtype} of shape {array.shape}; expected one "
                             f"{'integer' if kinds == 'iu' else 'number'} per sample" + (f" ({n},)" if n else ""))
        self[name] = array
        return array.shape[0]

    @staticmethod
    def _table(path: Path, n: int) -> Table:
        table = Table(path)
        if table.dtype.kind != "f" or table.shape[1] != n:
            raise ValueError(f"{path}: {table.dtype} of shape {table.shape}; expected (epochs, {n}) floats, one "
                             "column per sample of labels.npy")
        return table


def open_signals(path: str | os.PathLike) -> Mapping:
    """A run's signals, from a signals folder, a run folder holding one (`signals/`) or a `signals.npz`.

    Returns:
        A mapping of the arrays: for a folder a `Signals` (tables read in blocks), for a `.npz` a dict of
        arrays (read whole).

    Raises:
        ValueError: nothing of the kind at `path`, or a damaged file (the message names it).
    """
    path = Path(path)
    if path.is_dir() and not is_signals_folder(path):
        if is_signals_folder(path / "signals"):
            path = path / "signals"
        elif (path / "signals.npz").exists():
            path = path / "signals.npz"
    if is_signals_folder(path):
        return Signals(path)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    raise ValueError(f"{path}: no signals there (a folder written by a streaming Recorder, a run folder holding "
                     "one, or a signals.npz is needed)")
