"""curriculoss.harness.data.idx: the IDX reader, plain or gzipped, against hand-written files."""
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from curriculoss.harness import data as datasets

from _helpers import TINY64, one_line_error as _error, peak_bytes as _peak_bytes


def _idx(path: Path, shape: tuple[int, ...], data: bytes = b"") -> None:
    path.write_bytes(bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + data)


def test_idx_images_of_zero_pixels_are_refused(tmp_path, capsys):
    for split, n in (("train", 10), ("t10k", 4)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte", (n, 0, 0))
        _idx(tmp_path / f"{split}-labels-idx1-ubyte", (n,), bytes(i % 2 for i in range(n)))
    err = _error(capsys, ["train", *TINY64, "--dataset", "idx", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert f"{tmp_path / 'train-images-idx3-ubyte'}: images of 0x0 pixels; expected at least 1x1" in err


def destandardise(x_train, raw_train):
    """Per-channel train mean and std computed here from the raw [0, 1] images, to undo the reader's scaling."""
    axes = (0,) + tuple(range(2, raw_train.ndim))
    mean = raw_train.mean(axis=axes, keepdims=True)
    std = raw_train.std(axis=axes, keepdims=True)
    std[std == 0] = 1
    return x_train * std + mean, mean, std


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, per the format: 0, 0, type 0x08, ndim, big-endian uint32 sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(root: Path, *, gz: bool, n_train=12, n_test=5, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, h, w)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, h, w)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_valid(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, gz=gz)
    d = datasets.load("idx", data_dir=tmp_path)
    assert d.x_train.shape == (12, 1, 6, 5) and d.x_test.shape == (5, 1, 6, 5) and d.input_shape == (1, 6, 5)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_array_equal(d.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.y_test, arrays["t10k-labels-idx1-ubyte"])
    raw_train = arrays["train-images-idx3-ubyte"][:, None] / 255.0
    raw_test = arrays["t10k-images-idx3-ubyte"][:, None] / 255.0
    restored, mean, std = destandardise(d.x_train.astype(np.float64), raw_train)
    np.testing.assert_allclose(restored, raw_train, atol=1e-5)
    np.testing.assert_allclose(d.x_test * std + mean, raw_test, atol=1e-5)
    assert d.num_classes == int(max(arrays["train-labels-idx1-ubyte"].max(), arrays["t10k-labels-idx1-ubyte"].max())) + 1


def test_idx_regression_and_limit(tmp_path):
    arrays = write_idx_dir(tmp_path, gz=False)
    d = datasets.load("idx", data_dir=tmp_path, task="regression", limit=4)
    assert d.num_classes is None and d.y_train.dtype == np.float32 and len(d.y_train) == 4
    np.testing.assert_array_equal(d.y_train, arrays["train-labels-idx1-ubyte"][:4].astype(np.float32))


#: (gzipped, file, damage, the error's words): each damage of one file of a valid folder is refused.
DAMAGED = {
    "truncated": (False, "train-images-idx3-ubyte", lambda data: data[:-1], r"train-images-idx3-ubyte.*truncated"),
    "truncated-header": (False, "train-images-idx3-ubyte", lambda data: data[:6], "truncated"),
    "truncated-gzip": (True, "t10k-labels-idx1-ubyte.gz", lambda data: data[:-12], "t10k-labels-idx1-ubyte.gz"),
    # a labels file where the images belong: magic 0x00000801 instead of 0x00000803
    "wrong-magic": (False, "train-images-idx3-ubyte", lambda data: idx_bytes(np.zeros(12, np.uint8)),
                    r"train-images-idx3-ubyte.*magic number 0x00000801.*0x00000803"),
    "not-idx": (False, "train-images-idx3-ubyte", lambda data: b"\x1f\x00\x08\x03" + b"\x00" * 40, "not an IDX file"),
    "count-mismatch": (False, "t10k-labels-idx1-ubyte", lambda data: idx_bytes(np.zeros(4, np.uint8)),
                       r"t10k-images-idx3-ubyte has 5 images.*t10k-labels-idx1-ubyte has 4 labels"),
    "trailing-bytes": (False, "train-labels-idx1-ubyte", lambda data: data + b"\x00\x00", "train-labels-idx1-ubyte"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_idx_damaged_file_is_refused(tmp_path, case):
    gz, name, damage, words = DAMAGED[case]
    write_idx_dir(tmp_path, gz=gz)
    path = tmp_path / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=words):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_missing(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    # a file missing from the folder, and the folder itself: each named
    for folder, words in ((tmp_path, "t10k-images-idx3-ubyte"), (tmp_path / "nowhere", "nowhere")):
        with pytest.raises(FileNotFoundError, match=words):
            datasets.load("idx", data_dir=folder)


@pytest.mark.slow
def test_real_mnist_if_present():
    root = Path(os.environ.get("CURRICULOSS_MNIST", "/nonexistent"))
    if not root.is_dir():
        pytest.skip("no MNIST: set CURRICULOSS_MNIST to a folder of its IDX files")
    d = datasets.load("idx", data_dir=root)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28) and d.num_classes == 10


def test_idx_label_byte_255_is_refused_not_256_classes(tmp_path):
    arrays = write_idx_dir(tmp_path, gz=False, n_train=40, n_test=10)
    labels = arrays["train-labels-idx1-ubyte"].copy()
    labels[3] = 255
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=r"labels span 0\.\.255 \(256 classes\) but only \d+ distinct"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_gzip_bomb_is_not_inflated(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    # a valid 12-label header followed by 64 MiB of zeros: 64 KiB of gzip
    bomb = idx_bytes(np.zeros(12, np.uint8)) + bytes(64 << 20)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bomb, 9))
    peak, error = _peak_bytes(lambda: datasets.load("idx", data_dir=tmp_path))
    assert isinstance(error, ValueError) and "train-labels-idx1-ubyte.gz" in str(error)
    assert peak < 8 << 20, peak
    # a header declaring 10^12 pixels in a few bytes of gzip: refused from the header alone
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 12, 10**6, 10**6)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(12, np.uint8))))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1000)))
    peak, error = _peak_bytes(lambda: datasets.load("idx", data_dir=tmp_path))
    assert isinstance(error, ValueError) and "cannot hold" in str(error), error
    assert peak < 8 << 20, peak
    # image count checked on the header, before the images are read
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 13, 6, 5)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(13 * 30)))
    with pytest.raises(ValueError, match="has 13 images but .* has 12 labels"):
        datasets.load("idx", data_dir=tmp_path)
