"""curriculoss.harness.data.tabular: the npz and CSV readers."""
import numpy as np
import pytest

from curriculoss.harness import data as datasets


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


@pytest.mark.parametrize("y_bad", [np.int64(10**9), np.uint64(2**63), np.uint64(2**64 - 1), np.float64(1e9)])
def test_npz_huge_label_is_refused_before_any_allocation(tmp_path, y_bad):
    y = np.arange(20, dtype=np.asarray(y_bad).dtype) % 4
    y[5] = y_bad
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3)), y=y)
    with pytest.raises(ValueError, match=r"d\.npz: training label \d+ would mean \d+ classes"):
        datasets.load("npz", data_dir=tmp_path / "d.npz")
