"""The IDX reader (the MNIST layout: MNIST, Fashion-MNIST, KMNIST), plain or gzipped, with every
declared size checked against what the file can hold before anything is inflated or allocated."""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from curriculoss.harness.data._common import EXPECTED, _GZIP_MAX_RATIO


_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_idx_stream(path: Path, ndim: int | None, check_shape=None) -> tuple[bytes, bytes]:
    """(header, data) of an IDX file, plain or gzipped, reading no more than the header declares.

    The header is read from the stream first; the data size it declares is checked against what the
    file can hold (its length, or the most that deflate can inflate it to) before the data are read,
    and the data are read with a bounded read (one byte more, to detect trailing bytes). A gzip bomb
    or a header declaring terabytes is refused without being inflated or allocated. `check_shape`,
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

    The header is `0x00 0x00 <type> <ndim>` followed by `ndim` big-endian uint32 sizes; the data
    follow in C order. `ndim` (3 for images, magic 0x00000803; 1 for labels, magic 0x00000801), if
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
        raise FileNotFoundError(f"{str(directory)!r} is not a directory (expected {EXPECTED['idx']})")
    out = []
    for split in ("train", "t10k"):
        img_path = _find(directory, f"{split}-images-idx3-ubyte", EXPECTED["idx"])
        lab_path = _find(directory, f"{split}-labels-idx1-ubyte", EXPECTED["idx"])
        labels = read_idx(lab_path, ndim=1)

        def same_count(shape, labels=labels, img_path=img_path, lab_path=lab_path):
            # checked on the header, before the images (the large file) are inflated
            if shape[0] != len(labels):
                raise ValueError(f"{img_path} has {shape[0]} images but {lab_path} has {len(labels)} labels")
            if 0 in shape[1:]:
                raise ValueError(f"{img_path}: images of {shape[1]}x{shape[2]} pixels; expected at least 1x1")

        images = read_idx(img_path, ndim=3, _check_shape=same_count)
        if images.dtype != np.uint8:
            raise ValueError(f"{img_path}: expected unsigned-byte images (type 0x08); got {images.dtype}")
        out += [(images.astype(np.float32) / 255.0)[:, None, :, :], labels.astype(np.int64)]
    if out[0].shape[2:] != out[2].shape[2:]:
        raise ValueError(f"{directory}: training images are {out[0].shape[2:]} but test images are {out[2].shape[2:]}")
    return out[0], out[1], out[2], out[3]
