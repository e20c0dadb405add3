"""curriculoss.harness.data (its `load`): the checks common to every reader."""
import numpy as np
import pytest

from curriculoss.harness import data as datasets

from _helpers import TINY64, one_line_error as _error


def test_empty_test_set_is_refused(tmp_path, capsys):
    data = tmp_path / "empty_test.npz"
    np.savez(data, x=np.ones((8, 3)), y=np.arange(8) % 2, x_test=np.zeros((0, 3)), y_test=np.zeros(0, np.int64))
    out = tmp_path / "o"
    assert f"{data}: the test set is empty (0 rows)" in _error(
        capsys, ["train", *TINY64, "--dataset", "npz", "--data-dir", str(data), "--out", str(out)])
    assert not (out / "args.json").exists()


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
