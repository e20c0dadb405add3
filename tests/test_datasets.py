"""Data readers, on small files the tests write themselves (IDX, CIFAR-10 binary and python, npz, csv),
and scikit-learn's digits. The files are written here with ``struct``/``gzip``/``pickle`` directly, so
the readers are checked against the formats' specifications, not against themselves."""
import gzip
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from curriculoss.harness import data as datasets


def destandardise(x_train, raw_train):
    """Per-channel train mean and std computed here from the raw [0, 1] images, to undo the reader's scaling."""
    axes = (0,) + tuple(range(2, raw_train.ndim))
    mean = raw_train.mean(axis=axes, keepdims=True)
    std = raw_train.std(axis=axes, keepdims=True)
    std[std == 0] = 1
    return x_train * std + mean, mean, std


# --------------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_dtypes_and_split():
    d = datasets.load("digits")
    assert d.name == "digits" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    # standardised by the training set's statistics
    assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    # every sample is used once; the split is stratified: each class has a quarter (+-1) in the test set
    full = Counter(load_digits().target.tolist())
    test = Counter(d.y_test.tolist())
    assert Counter(d.y_train.tolist()) + test == full
    for k, n in full.items():
        assert abs(test[k] - 0.25 * n) <= 1, (k, test[k], n)


def test_digits_images_match_sklearn():
    d = datasets.load("digits")
    raw = load_digits()
    lookup = {img.astype(np.int64).tobytes(): t for img, t in zip(raw.images, raw.target)}
    # One channel: the reader's standardisation is one affine map; undo it with the extreme pixel
    # values (every digit set has pixels 0 and 16) and recover the 0..16 integers.
    lo, hi = float(d.x_train.min()), float(d.x_train.max())
    for x, label in zip(d.x_test[:100], d.y_test[:100]):
        counts = np.rint((x[0].astype(np.float64) - lo) / (hi - lo) * 16).astype(np.int64)
        assert lookup[counts.tobytes()] == label


def test_digits_deterministic_limit_and_regression():
    a, b = datasets.load("digits"), datasets.load("digits")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    small = datasets.load("digits", limit=100)
    assert small.x_train.shape == (100, 1, 8, 8) and small.num_classes == 10
    np.testing.assert_array_equal(small.y_train, a.y_train[:100])
    assert len(small.y_test) == 450
    reg = datasets.load("digits", task="regression")
    assert reg.num_classes is None and reg.y_train.dtype == np.float32 and reg.y_test.dtype == np.float32
    np.testing.assert_array_equal(reg.y_train, a.y_train.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# IDX


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


def test_idx_truncated(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        datasets.load("idx", data_dir=tmp_path)
    path.write_bytes(path.read_bytes()[:6])  # inside the header
    with pytest.raises(ValueError, match="truncated"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_wrong_magic(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    # a labels file where the images belong: magic 0x00000801 instead of 0x00000803
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(12, np.uint8)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 0x00000801.*0x00000803"):
        datasets.load("idx", data_dir=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x1f\x00\x08\x03" + b"\x00" * 40)
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_count_mismatch(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has 5 images.*t10k-labels-idx1-ubyte has 4 labels"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_trailing_bytes(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        datasets.load("idx", data_dir=tmp_path)


def test_idx_missing(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        datasets.load("idx", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.load("idx", data_dir=tmp_path / "nowhere")


@pytest.mark.slow
def test_real_mnist_if_present():
    root = Path(os.environ.get("CURRICULOSS_MNIST", "/nonexistent"))
    if not root.is_dir():
        pytest.skip("no MNIST: set CURRICULOSS_MNIST to a folder of its IDX files")
    d = datasets.load("idx", data_dir=root)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28) and d.num_classes == 10


# --------------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar_arrays(seed=0, per_batch=3, n_test=2):
    rng = np.random.default_rng(seed)
    batches = [(rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8), rng.integers(0, 10, size=per_batch))
               for _ in range(5)]
    test = (rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8), rng.integers(0, 10, size=n_test))
    return batches, test


def write_cifar_binary(folder: Path, batches, test):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in zip([*CIFAR_TRAIN, "test_batch"], [*batches, test]):
        records = b"".join(bytes([int(lab)]) + row.tobytes() for row, lab in zip(data, labels))
        (folder / (name + ".bin")).write_bytes(records)


class Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (BINSTRING), as the original CIFAR-10 pickles have them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_style_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    # Python 2 era numpy names the module numpy.core.multiarray
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_python(folder: Path, batches, test, style: str):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in zip([*CIFAR_TRAIN, "test_batch"], [*batches, test]):
        obj = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data,
               b"filenames": [b"img%d.png" % i for i in range(len(labels))]}
        blob = py2_style_dumps(obj) if style == "py2" else pickle.dumps(obj, protocol=4)
        (folder / name).write_bytes(blob)


def check_cifar(d, batches, test):
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32) and d.input_shape == (3, 32, 32)
    assert d.num_classes == 10 and d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_array_equal(d.y_train, np.concatenate([lab for _, lab in batches]))
    np.testing.assert_array_equal(d.y_test, test[1])
    raw = np.concatenate([data for data, _ in batches]).astype(np.float64) / 255.0
    # record layout: 1024 red, 1024 green, 1024 blue bytes, each 32x32 row-major
    n, c, r, col = 7, 2, 5, 30
    pixel = raw[n, c * 1024 + r * 32 + col]
    ch = raw.reshape(-1, 3, 1024)
    mean, std = ch.mean(axis=(0, 2)), ch.std(axis=(0, 2))
    assert d.x_train[n, c, r, col] * std[c] + mean[c] == pytest.approx(pixel, abs=1e-5)
    assert np.abs(d.x_train.mean(axis=(0, 2, 3))).max() < 1e-4  # per-channel standardised


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_binary(tmp_path, nested):
    batches, test = cifar_arrays()
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    write_cifar_binary(folder, batches, test)
    check_cifar(datasets.load("cifar10", data_dir=tmp_path), batches, test)


@pytest.mark.parametrize("style", ["py2", "protocol4"])
def test_cifar10_python(tmp_path, style):
    batches, test = cifar_arrays(seed=1)
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test, style)
    check_cifar(datasets.load("cifar10", data_dir=tmp_path), batches, test)
    check_cifar(datasets.load("cifar10", data_dir=tmp_path / "cifar-10-batches-py"), batches, test)


def test_cifar10_binary_truncated_and_missing(tmp_path):
    batches, test = cifar_arrays()
    write_cifar_binary(tmp_path, batches, test)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"data_batch_3.bin.*truncated"):
        datasets.load("cifar10", data_dir=tmp_path)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin"):
        datasets.load("cifar10", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 batches"):
        datasets.load("cifar10", data_dir=tmp_path / "..")


class _SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins

        return builtins.eval, (self.code,)


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("payload", ["system", "eval"])
def test_cifar10_hostile_pickle_never_runs(tmp_path, where, payload):
    batches, test = cifar_arrays()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test, "protocol4")
    marker = tmp_path / "pwned"
    evil = (_SystemCall(f"touch {marker}") if payload == "system"
            else _Eval(f"open({str(marker)!r}, 'w').close()"))
    obj = evil if where == "top" else {b"data": batches[0][0], b"labels": evil}
    (folder / "data_batch_2").write_bytes(pickle.dumps(obj, protocol=4) if where == "nested" else py2_style_dumps(obj))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_2.*(system|eval)") as info:
        datasets.load("cifar10", data_dir=tmp_path)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


def test_restricted_unpickler_allows_only_numpy_reconstruction(tmp_path):
    import io

    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(datasets.RestrictedUnpickler(io.BytesIO(pickle.dumps(arr, protocol=4))).load(), arr)
    np.testing.assert_array_equal(datasets.RestrictedUnpickler(io.BytesIO(py2_style_dumps(arr))).load(), arr)
    for harmless_but_unneeded in (Counter(), Path("x")):
        with pytest.raises(pickle.UnpicklingError):
            datasets.RestrictedUnpickler(io.BytesIO(pickle.dumps(harmless_but_unneeded, protocol=4))).load()


def test_cifar10_python_garbage(tmp_path):
    batches, test = cifar_arrays()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test, "protocol4")
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="test_batch"):
        datasets.load("cifar10", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"test_batch.*\(N, 3072\)"):
        datasets.load("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# npz and csv


def test_npz_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3, 4)), np.repeat(np.arange(5), 10)
    xt, yt = rng.normal(size=(7, 3, 4)), rng.integers(0, 5, size=7)
    np.savez(tmp_path / "full.npz", x=x, y=y, x_test=xt, y_test=yt)
    d = datasets.load("npz", data_dir=tmp_path / "full.npz")
    assert d.input_shape == (3, 4) and d.num_classes == 5 and d.x_train.dtype == np.float32
    np.testing.assert_allclose(d.x_train, x.astype(np.float32))  # features used as given
    np.testing.assert_array_equal(d.y_test, yt)

    np.savez(tmp_path / "train_only.npz", x=x, y=y)
    a = datasets.load("npz", data_dir=tmp_path / "train_only.npz")
    b = datasets.load("npz", data_dir=tmp_path / "train_only.npz")
    assert len(a.y_train) == 40 and len(a.y_test) == 10
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert sorted(a.y_test.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # stratified
    # the split is a partition of the original samples
    together = np.concatenate([a.x_train, a.x_test]).reshape(50, -1)
    assert sorted(map(tuple, together)) == sorted(map(tuple, x.astype(np.float32).reshape(50, -1)))


def test_npz_regression_and_errors(tmp_path):
    x, y = np.ones((10, 2)), np.linspace(0, 1, 10)
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    d = datasets.load("npz", data_dir=tmp_path / "reg.npz", task="regression")
    assert d.num_classes is None and d.y_train.dtype == np.float32
    with pytest.raises(ValueError, match="integer class indices"):
        datasets.load("npz", data_dir=tmp_path / "reg.npz")
    np.savez(tmp_path / "nox.npz", y=y)
    with pytest.raises(ValueError, match=r"nox.npz.*missing array\(s\) x"):
        datasets.load("npz", data_dir=tmp_path / "nox.npz")
    np.savez(tmp_path / "len.npz", x=x, y=np.arange(9))
    with pytest.raises(ValueError, match="len.npz"):
        datasets.load("npz", data_dir=tmp_path / "len.npz")
    np.savez(tmp_path / "half.npz", x=x, y=np.arange(10), x_test=x)
    with pytest.raises(ValueError, match="both x_test and y_test"):
        datasets.load("npz", data_dir=tmp_path / "half.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([[1, "a"]], dtype=object), y=np.array([0]))
    with pytest.raises(ValueError, match="obj.npz"):
        datasets.load("npz", data_dir=tmp_path / "obj.npz")


def test_csv_file_and_directory(tmp_path):
    rows = [(i * 0.5, -i, i % 3) for i in range(30)]
    text = "f1,f2,label\n" + "\n".join(f"{a},{b},{c}" for a, b, c in rows) + "\n"
    (tmp_path / "data.csv").write_text(text)
    d = datasets.load("csv", data_dir=tmp_path / "data.csv")
    assert len(d.y_train) == 24 and len(d.y_test) == 6 and d.input_shape == (2,) and d.num_classes == 3
    for xrow, label in zip(d.x_train, d.y_train):  # the label stays with its features
        assert (float(xrow[0]) * 2) % 3 == label

    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "train.csv").write_text("\n".join(f"{a},{b},{c}" for a, b, c in rows))
    (folder / "test.csv").write_text("1.0,2.0,1\n3.0,4.0,2\n")
    d = datasets.load("csv", data_dir=folder, limit=10)
    np.testing.assert_array_equal(d.x_test, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(d.y_test, [1, 2])
    np.testing.assert_array_equal(d.y_train, [c for _, _, c in rows[:10]])
    assert d.y_train.dtype == np.int64


def test_csv_errors(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2,0\n1,0\n")
    with pytest.raises(ValueError, match=r"ragged.csv: line 2"):
        datasets.load("csv", data_dir=tmp_path / "ragged.csv")
    (tmp_path / "words.csv").write_text("a,b\n1,0\nx,1\n")
    with pytest.raises(ValueError, match=r"words.csv: line 3"):
        datasets.load("csv", data_dir=tmp_path / "words.csv")
    with pytest.raises(FileNotFoundError, match="train.csv"):
        datasets.load("csv", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# arguments


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dataset must be one of digits, idx, cifar10, cifar100, imagefolder, npz, csv"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="task"):
        datasets.load("digits", task="detection")
    with pytest.raises(ValueError, match="limit"):
        datasets.load("digits", limit=0)
    with pytest.raises(ValueError, match="data_dir is required"):
        datasets.load("idx")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz.*x, y"):
        datasets.load("npz", data_dir=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="regression"):
        datasets.load("cifar10", data_dir=tmp_path, task="regression")


# --------------------------------------------------------------------------------------------------
# hostile and out-of-domain inputs: class counts, non-finite data, memory bombs


def _peak_bytes(fn):
    """Peak of Python-tracked allocations (bytes objects, numpy arrays) during fn(), and its exception."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned to the caller, which checks it
        error = exc
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def test_idx_label_byte_255_is_refused_not_256_classes(tmp_path):
    arrays = write_idx_dir(tmp_path, gz=False, n_train=40, n_test=10)
    labels = arrays["train-labels-idx1-ubyte"].copy()
    labels[3] = 255
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=r"labels span 0\.\.255 \(256 classes\) but only \d+ distinct"):
        datasets.load("idx", data_dir=tmp_path)


@pytest.mark.parametrize("y_bad", [np.int64(10**9), np.uint64(2**63), np.uint64(2**64 - 1), np.float64(1e9)])
def test_npz_huge_label_is_refused_before_any_allocation(tmp_path, y_bad):
    y = np.arange(20, dtype=np.asarray(y_bad).dtype) % 4
    y[5] = y_bad
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3)), y=y)
    with pytest.raises(ValueError, match=r"d\.npz: training label \d+ would mean \d+ classes"):
        datasets.load("npz", data_dir=tmp_path / "d.npz")


def test_non_finite_after_float32_conversion_is_refused(tmp_path):
    x = np.ones((20, 3))
    x[2, 1] = 1e300  # finite in float64, inf in float32
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match=r"big\.npz: training features contain NaN or infinite"):
        datasets.load("npz", data_dir=tmp_path / "big.npz")
    (tmp_path / "big.csv").write_text("".join(f"{1e300 if i == 4 else i},{i % 2}\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"big\.csv: training features contain NaN or infinite"):
        datasets.load("csv", data_dir=tmp_path / "big.csv")
    # regression targets: NaN, and 1e300 (inf in float32)
    for bad in (np.nan, 1e300):
        y = np.linspace(0, 1, 20)
        y[7] = bad
        np.savez(tmp_path / "reg.npz", x=np.ones((20, 3)), y=y, x_test=np.ones((2, 3)), y_test=np.zeros(2))
        with pytest.raises(ValueError, match=r"reg\.npz: training regression targets contain NaN or infinite"):
            datasets.load("npz", data_dir=tmp_path / "reg.npz", task="regression")


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


def test_npz_unused_and_lying_members_are_not_inflated(tmp_path):
    import zipfile

    x, y = np.ones((20, 3)), np.arange(20) % 2
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y, junk=np.zeros(64 << 17))  # 64 MiB never used
    peak, error = _peak_bytes(lambda: datasets.load("npz", data_dir=path))
    assert error is None and peak < 16 << 20, (peak, error)
    # x declares 10^10 float64 values and holds 80 bytes: refused before the 80 GB allocation
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", head.getvalue() + bytes(80))
        buf = io.BytesIO()
        np.save(buf, y)
        zf.writestr("y.npy", buf.getvalue())
    with pytest.raises(ValueError, match=r"d\.npz: member x declares shape \(1000000000, 10\)"):
        datasets.load("npz", data_dir=path)


def test_cifar_pickle_calling_ndarray_is_refused(tmp_path):
    class Uninitialised:
        def __reduce__(self):
            return np.ndarray, ((10**6, 3072), "u1")

    batches, test = cifar_arrays()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test, "protocol4")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Uninitialised(), b"labels": [0] * 10**6}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_3.*numpy\.ndarray"):
        datasets.load("cifar10", data_dir=tmp_path)
