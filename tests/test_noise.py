"""Label noise: realised rates against the binomial closed forms, the transition matrix's empirical
frequencies against the matrix (chi-square), determinism, files, and bad arguments."""
import math

import numpy as np
import pytest
from scipy import stats

from curriculoss import noise

N = 100_000
C = 10


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(12345).integers(0, C, size=N)


def assert_rate(observed: float, p: float, n: int = N, sigmas: float = 5.0):
    """Observed Bernoulli frequency within ``sigmas`` binomial standard deviations of ``p``."""
    sd = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(observed - p) <= sigmas * sd + 1e-12, (observed, p, sd)


def assert_uniform(values: np.ndarray, categories, alpha: float = 1e-4):
    counts = np.array([(values == k).sum() for k in categories])
    assert counts.sum() == len(values)
    assert stats.chisquare(counts).pvalue > alpha, counts


# --------------------------------------------------------------------------------------------------
# realised rates and the distribution of the new labels


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_rate_includes_true_class(labels, rate):
    out = noise.symmetric(labels, rate, C, seed=1)
    assert out.labels.dtype == np.int64 and out.mask.dtype == bool and out.labels.shape == (N,)
    np.testing.assert_array_equal(out.mask, out.labels != labels)
    assert out.rate == pytest.approx(out.mask.mean())
    assert_rate(out.rate, rate * (C - 1) / C)
    # the corrupted labels of class 3 are uniform over the other nine classes
    assert_uniform(out.labels[out.mask & (labels == 3)], [k for k in range(C) if k != 3])
    # untouched samples keep their label
    np.testing.assert_array_equal(out.labels[~out.mask], labels[~out.mask])


def test_symmetric_new_label_uniform_over_all_classes(labels):
    # At rate 1 every label is a fresh uniform draw over all C classes, the true one included.
    out = noise.symmetric(labels, 1.0, C, seed=2)
    assert_uniform(out.labels[labels == 0], range(C))
    assert_rate(out.rate, (C - 1) / C)


@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_symmetric_exclude_true(labels, rate):
    out = noise.symmetric(labels, rate, C, seed=3, exclude_true=True)
    assert_rate(out.rate, rate)
    assert_uniform(out.labels[out.mask & (labels == 7)], [k for k in range(C) if k != 7])


def test_symmetric_default_num_classes_from_labels():
    y = np.array([0, 1, 2, 2, 1, 0] * 1000)
    out = noise.symmetric(y, 1.0, seed=0)
    assert set(np.unique(out.labels)) == {0, 1, 2}


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.45, 1.0])
def test_pair_flip(labels, rate):
    out = noise.pair_flip(labels, rate, C, seed=4)
    assert_rate(out.rate, rate)
    np.testing.assert_array_equal(out.labels[out.mask], (labels[out.mask] + 1) % C)
    np.testing.assert_array_equal(out.labels[~out.mask], labels[~out.mask])
    if rate == 1.0:
        assert out.mask.all() and (out.labels[labels == C - 1] == 0).all()


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_map_is_patrini_by_name():
    by_name = {CIFAR10_NAMES[s]: CIFAR10_NAMES[t] for s, t in noise.CIFAR10_MAP.items()}
    assert by_name == {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    assert noise.MNIST_MAP == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


@pytest.mark.parametrize("class_map", [noise.MNIST_MAP, noise.CIFAR10_MAP])
def test_asymmetric(labels, class_map):
    rate = 0.4
    out = noise.asymmetric(labels, rate, class_map, seed=5)
    moved = np.isin(labels, [s for s, t in class_map.items() if s != t])
    assert not out.mask[~moved].any()
    expected_targets = np.array([class_map.get(int(k), int(k)) for k in labels[out.mask]])
    np.testing.assert_array_equal(out.labels[out.mask], expected_targets)
    assert_rate(out.mask[moved].mean(), rate, n=int(moved.sum()))
    assert_rate(out.rate, rate * moved.mean())


def test_asymmetric_sequence_map_equals_dict_map(labels):
    seq = list(range(C))
    for s, t in noise.MNIST_MAP.items():
        seq[s] = t
    a = noise.asymmetric(labels, 0.3, seq, seed=6)
    b = noise.asymmetric(labels, 0.3, noise.MNIST_MAP, seed=6)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_from_matrix_frequencies_match_matrix():
    rng = np.random.default_rng(0)
    k = 5
    t = rng.dirichlet(np.ones(k), size=k)
    t[1] = [0.0, 0.5, 0.0, 0.5, 0.0]  # zero-probability entries must never be drawn
    y = rng.integers(0, k, size=200_000)
    out = noise.from_matrix(y, t, seed=7)
    for i in range(k):
        row = out.labels[y == i]
        counts = np.bincount(row, minlength=k)
        support = t[i] > 0
        assert counts[~support].sum() == 0
        expected = t[i][support] * len(row)
        assert stats.chisquare(counts[support], expected).pvalue > 1e-4, (i, counts, expected)
    # the realised rate is the off-diagonal mass weighted by the class frequencies
    p_noise = sum((y == i).mean() * (1 - t[i, i]) for i in range(k))
    assert_rate(out.rate, p_noise, n=len(y))


def test_from_matrix_orientation_rows_are_true_class():
    # rows = true class: class 0 always becomes 1, class 1 stays 1.
    t = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = noise.from_matrix(np.array([0, 1, 0, 1]), t)
    np.testing.assert_array_equal(out.labels, [1, 1, 1, 1])
    np.testing.assert_array_equal(out.mask, [True, False, True, False])


def test_from_matrix_identity_and_pair_equivalence(labels):
    out = noise.from_matrix(labels, np.eye(C), seed=8)
    np.testing.assert_array_equal(out.labels, labels)
    assert out.rate == 0.0
    # the pair-flip matrix realises a pair-flip rate
    r = 0.3
    t = (1 - r) * np.eye(C) + r * np.roll(np.eye(C), 1, axis=1)
    out = noise.from_matrix(labels, t, seed=8)
    assert_rate(out.rate, r)
    np.testing.assert_array_equal(out.labels[out.mask], (labels[out.mask] + 1) % C)


def test_regression_noise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=N).astype(np.float32)
    out = noise.regression(y, 0.4, 1.0, 10.0, seed=9)
    assert out.labels.dtype == np.float32
    assert_rate(out.rate, 0.4)
    replaced = out.labels[out.mask]
    assert replaced.min() >= 1.0 and replaced.max() <= 10.0
    np.testing.assert_array_equal(out.labels[~out.mask], y[~out.mask])
    # the replacements are Uniform[1, 10] (Kolmogorov-Smirnov against scipy's uniform)
    assert stats.kstest(replaced, stats.uniform(loc=1.0, scale=9.0).cdf).pvalue > 1e-4
    ints = noise.regression(np.arange(100), 0.5, 0, 1, seed=0)
    assert ints.labels.dtype == np.float64


# --------------------------------------------------------------------------------------------------
# determinism


KINDS = {
    "symmetric": lambda y, s: noise.symmetric(y, 0.4, C, seed=s),
    "symmetric-excl": lambda y, s: noise.symmetric(y, 0.4, C, seed=s, exclude_true=True),
    "pair": lambda y, s: noise.pair_flip(y, 0.4, C, seed=s),
    "asymmetric": lambda y, s: noise.asymmetric(y, 0.4, noise.MNIST_MAP, seed=s),
    "matrix": lambda y, s: noise.from_matrix(y, np.full((C, C), 1.0 / C), seed=s),
    "regression": lambda y, s: noise.regression(y.astype(np.float64), 0.4, 0.0, 9.0, seed=s),
    "apply": lambda y, s: noise.apply("symmetric", y, 0.4, num_classes=C, seed=s),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_deterministic(kind):
    y = np.random.default_rng(0).integers(0, C, size=5000)
    a, b, c = KINDS[kind](y, 11), KINDS[kind](y, 11), KINDS[kind](y, 12)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.labels, c.labels)


def test_input_not_modified(labels):
    before = labels.copy()
    noise.symmetric(labels, 1.0, C)
    noise.from_matrix(labels, np.full((C, C), 0.1))
    np.testing.assert_array_equal(labels, before)


def test_apply_dispatch(labels):
    np.testing.assert_array_equal(noise.apply("pair", labels, 0.3, num_classes=C, seed=1).labels,
                                  noise.pair_flip(labels, 0.3, C, seed=1).labels)
    np.testing.assert_array_equal(noise.apply("asymmetric", labels, 0.3, num_classes=C, seed=1).labels,
                                  noise.asymmetric(labels, 0.3, noise.MNIST_MAP, seed=1).labels)
    cifar = noise.apply("asymmetric", labels, 0.3, num_classes=C, seed=1, class_map=noise.CIFAR10_MAP)
    np.testing.assert_array_equal(cifar.labels, noise.asymmetric(labels, 0.3, noise.CIFAR10_MAP, seed=1).labels)
    none = noise.apply("none", labels, 0.0, num_classes=C)
    np.testing.assert_array_equal(none.labels, labels)
    assert none.rate == 0.0 and none.labels is not labels
    with pytest.raises(ValueError, match="class_map"):
        noise.apply("asymmetric", labels % 5, 0.3, num_classes=5)


def test_noisy_labels_result():
    r = noise.NoisyLabels(np.array([1, 2, 3]), np.array([True, False, False]))
    assert r.rate == pytest.approx(1 / 3) and len(r) == 3
    assert noise.NoisyLabels(np.array([], np.int64), np.array([], bool)).rate == 0.0


# --------------------------------------------------------------------------------------------------
# noisy labels from a file


def test_from_file_npy_and_csv(tmp_path):
    true = np.array([0, 1, 2, 3, 4, 0, 1])
    given = np.array([0, 1, 3, 3, 0, 0, 2])
    np.save(tmp_path / "noisy.npy", given)
    (tmp_path / "noisy.csv").write_text("label\n" + "\n".join(map(str, given)) + "\n")
    (tmp_path / "plain.csv").write_text("\n".join(map(str, given)))
    for name in ("noisy.npy", "noisy.csv", "plain.csv"):
        out = noise.from_file(tmp_path / name, true, num_classes=5)
        np.testing.assert_array_equal(out.labels, given)
        np.testing.assert_array_equal(out.mask, [False, False, True, False, True, False, True])
        assert out.rate == pytest.approx(3 / 7)
    unknown = noise.from_file(tmp_path / "noisy.npy")
    assert not unknown.mask.any() and unknown.rate == 0.0
    via_apply = noise.apply("file", true, 0.0, num_classes=5, path=str(tmp_path / "noisy.csv"))
    np.testing.assert_array_equal(via_apply.labels, given)


#: A labels file that `from_file` refuses: (its name, its content, whether the true labels are given, the
#: number of classes given, the error's words).
BAD_LABEL_FILES = [
    ("short.npy", np.arange(4), True, None, "4 labels but the training set has 5"),
    ("big.npy", np.array([0, 1, 2, 3, 9]), True, 5, "num_classes=5"),
    ("frac.npy", np.array([0.5, 1, 2, 3, 4]), True, None, "integer"),
    ("obj.npy", np.array([0, "a"], dtype=object), False, None, "obj.npy"),
    ("two.csv", "0,1\n1,2\n", False, None, "one column"),
    ("bad.csv", "label\n1\ncat\n", False, None, "line 3"),
    ("labels.txt", "1\n", False, None, ".npy or .csv"),
]


@pytest.mark.parametrize("name, content, with_true, num_classes, words", BAD_LABEL_FILES,
                         ids=[case[0] for case in BAD_LABEL_FILES])
def test_from_file_errors(tmp_path, name, content, with_true, num_classes, words):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content, allow_pickle=True)
    true = (np.arange(5),) if with_true else ()
    kwargs = {"num_classes": num_classes} if num_classes else {}
    with pytest.raises(ValueError, match=words):
        noise.from_file(path, *true, **kwargs)


def test_from_file_missing_file_and_no_path(tmp_path):
    true = np.arange(5)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        noise.from_file(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="path"):
        noise.apply("file", true, 0.0, num_classes=5)


# --------------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan"), "0.4x", None])
@pytest.mark.parametrize("fn", [
    lambda r: noise.symmetric(np.arange(4), r),
    lambda r: noise.pair_flip(np.arange(4), r),
    lambda r: noise.asymmetric(np.arange(4), r, {0: 1}),
    lambda r: noise.regression(np.arange(4.0), r, 0, 1),
    lambda r: noise.apply("symmetric", np.arange(4), r, num_classes=4),
])
def test_bad_rate(fn, rate):
    with pytest.raises(ValueError, match="rate"):
        fn(rate)


@pytest.mark.parametrize("matrix, message", [
    (np.array([[0.5, 0.4], [0.0, 1.0]]), "row-stochastic"),
    (np.array([[1.2, -0.2], [0.0, 1.0]]), "non-negative"),
    (np.ones((2, 3)) / 3, "square"),
    (np.array([[np.nan, 1.0], [0.0, 1.0]]), "finite"),
    (np.eye(2), r"at least \(3, 3\)"),
])
def test_bad_matrix(matrix, message):
    y = np.array([0, 1, 2]) if "at least" in message else np.array([0, 1, 1])
    with pytest.raises(ValueError, match=message):
        noise.from_matrix(y, matrix)


def test_matrix_tolerance():
    t = np.array([[0.5, 0.5 + 5e-7], [0.0, 1.0]])
    noise.from_matrix(np.array([0, 1]), t)  # within 1e-6 of stochastic


@pytest.mark.parametrize("bad, message", [
    (np.array([0, 1, 10]), "num_classes=10"),
    (np.array([0, -1, 2]), ">= 0"),
    (np.array([0.0, 1.0]), "integer dtype"),
    (np.array([[0, 1]]), "1-D"),
    (np.array([True, False]), "integer dtype"),
])
def test_bad_labels(bad, message):
    with pytest.raises(ValueError, match=message):
        noise.symmetric(bad, 0.2, 10)


def test_other_bad_arguments():
    y = np.arange(4)
    with pytest.raises(ValueError, match="num_classes"):
        noise.symmetric(y, 0.2, 1.5)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        noise.symmetric(np.zeros(3, np.int64), 0.2, 1, exclude_true=True)
    with pytest.raises(ValueError, match="seed"):
        noise.symmetric(y, 0.2, seed=1.5)
    with pytest.raises(ValueError, match="class_map"):
        noise.asymmetric(y, 0.2, {0: -1})
    with pytest.raises(ValueError, match="class_map"):
        noise.asymmetric(y, 0.2, {0: 7}, num_classes=4)
    with pytest.raises(ValueError, match="low and high"):
        noise.regression(np.arange(4.0), 0.2, 2.0, 1.0)
    with pytest.raises(ValueError, match="targets"):
        noise.regression(np.ones((2, 2)), 0.2, 0.0, 1.0)
    with pytest.raises(ValueError, match="noise kind must be one of"):
        noise.apply("gaussian", y, 0.2, num_classes=4)
