"""A lazy reader of `.npz` archives that may be damaged or hostile.

Nothing is inflated before it is asked for, and nothing is asked for before its size is known. A
member's `.npy` header (the first bytes of its zip entry) is read first and checked against the
entry: the bytes the header declares must be the bytes the entry holds, the entry must lie inside
the file, and a compressed entry may hold no more than deflate can inflate it to. Members that are
never asked for are never read at all. Every error is a `NpzError` naming the file and, for
one member, the member.
"""
from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from curriculoss.harness.data._common import _GZIP_MAX_RATIO, file_kind

__all__ = ["LazyNpz", "NpzError"]

#: What reading a damaged archive or member may raise (zipfile, zlib and numpy's .npy reader).
_READ_ERRORS = (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


class NpzError(ValueError):
    """An archive, or one of its members, that cannot be read as what it claims to be."""


class LazyNpz(Mapping):
    """The arrays of an `.npz` file by name (`'labels'` for `labels.npy`), read on first access.

    `header` gives a member's `(shape, dtype)` after the checks above, without inflating it.
    Use it as a context manager, or call `close`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._size = _regular_size(self.path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _READ_ERRORS as exc:
            raise NpzError(f"{self.path}: not a readable .npz archive ({exc}); the file is damaged or "
                           "truncated") from None
        entries = {info.filename: info for info in self._zip.infolist()}
        self._entries = {name[:-4] if name.endswith(".npy") else name: info for name, info in entries.items()
                         if name.endswith(".npy") or name + ".npy" not in entries}
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def error(self, key: str, problem: str) -> NpzError:
        """An error about member `key`, naming the file and the member."""
        return NpzError(f"{self.path}: member {key}: {problem}")

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype member `key` declares, checked against its entry (nothing inflated)."""
        if key not in self._headers:
            self._headers[key] = self._read_header(key)
        shape, dtype, _ = self._headers[key]
        return shape, dtype

    def _read_header(self, key: str):
        info = self._entries[key]
        self._check_entry(key, info)
        try:
            with self._zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                offset = fh.tell()
        except _READ_ERRORS as exc:
            raise self.error(key, f"not a readable .npy array ({exc})") from None
        if dtype.hasobject:
            raise self.error(key, f"dtype {dtype} holds Python objects, which are never read")
        need = math.prod(shape) * dtype.itemsize
        if need != info.file_size - offset:
            raise self.error(key, f"declares shape {shape} of {dtype} ({need} bytes) but holds "
                                  f"{info.file_size - offset} bytes; the archive is damaged")
        return shape, dtype, offset

    def _check_entry(self, key: str, info: zipfile.ZipInfo) -> None:
        if info.header_offset + info.compress_size > self._size:
            raise self.error(key, "extends past the end of the file; the archive is truncated")
        stored = info.compress_type == zipfile.ZIP_STORED
        if (stored and info.file_size != info.compress_size) or \
                (not stored and info.file_size > _GZIP_MAX_RATIO * info.compress_size + 1024):
            raise self.error(key, f"claims {info.file_size} bytes from {info.compress_size} in the file; the "
                                  "archive is damaged")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            if key not in self._entries:
                raise KeyError(key)
            self.header(key)
            try:
                with self._zip.open(self._entries[key]) as fh:
                    self._arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
            except _READ_ERRORS as exc:
                raise self.error(key, f"cannot be read ({exc}); the archive is damaged") from None
        return self._arrays[key]

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "LazyNpz":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _regular_size(path: Path) -> int:
    """The size of `path`, a regular file (a FIFO or a device is refused before it is opened)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise NpzError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NpzError(f"{path}: {file_kind(st.st_mode)}, not a regular file (expected an .npz archive)")
    return st.st_size
