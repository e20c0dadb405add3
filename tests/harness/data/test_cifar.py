"""curriculoss.harness.data.cifar: the CIFAR readers and the restricted unpickler."""
from __future__ import annotations

import builtins
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curriculoss.harness import data as datasets


def test_cifar100_python(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 12), ("test", 4)):
        obj = {b"fine_labels": [int(v) for v in rng.integers(0, 100, n)], b"coarse_labels": [0] * n,
               b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))
    d = datasets.load("cifar100", data_dir=tmp_path)
    assert d.num_classes == 100 and d.x_train.shape == (12, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    mean, std = d.normalisation
    raw = np.frombuffer(pickle.loads((folder / "train").read_bytes())[b"data"].tobytes(), np.uint8)
    raw = raw.reshape(12, 3, 1024).astype(np.float64) / 255
    np.testing.assert_allclose(mean, raw.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, raw.std(axis=(0, 2)), rtol=1e-5)


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


class _Calls:
    """A pickle payload: unpickling it calls `function(argument)`."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("payload", ["system", "eval"])
def test_cifar10_hostile_pickle_never_runs(tmp_path, where, payload):
    batches, test = cifar_arrays()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test, "protocol4")
    marker = tmp_path / "pwned"
    evil = (_Calls(os.system, f"touch {marker}") if payload == "system"
            else _Calls(builtins.eval, f"open({str(marker)!r}, 'w').close()"))
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
