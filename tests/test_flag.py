"""Ranking of likely mislabelled samples: scores, masks and evaluation against known answers and
brute-force counts; tables read in blocks against the same arrays in memory."""
import numpy as np
import pytest

from curriculoss import flag


def test_scores_order_and_range():
    loss = np.array([[0.1, 2.0, 0.5], [0.2, 3.0, np.nan]])
    scores = flag.label_quality_scores(loss, method="loss", last_epochs=None)
    np.testing.assert_allclose(scores, np.exp(-np.array([0.15, 2.5, 0.5])))
    conf = np.array([[np.e, 0.2, 1.0]])
    np.testing.assert_allclose(flag.label_quality_scores(conf, method="superloss"), [1.0, 0.2 / np.e, 1 / np.e])
    sigma = np.array([[1.0, 5.0]])
    s = flag.label_quality_scores(sigma, method="data-params")
    assert s[1] < s[0] and ((0 <= s) & (s <= 1)).all()


def test_last_epochs_window():
    loss = np.array([[9.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(flag.label_quality_scores(loss, last_epochs=2), np.exp(-np.array([1.0, 2.0])))
    np.testing.assert_allclose(flag.label_quality_scores(loss, last_epochs=1.0), np.exp(-np.array([11 / 3, 4 / 3])))


def test_find_label_issues_mask_indices_and_threshold():
    scores = np.array([0.9, 0.1, 0.5, 0.05, 0.95])
    mask = flag.find_label_issues(scores, num_issues=2)
    np.testing.assert_array_equal(mask, [False, True, False, True, False])
    np.testing.assert_array_equal(flag.find_label_issues(scores, num_issues=2, return_indices_ranked_by_score=True), [3, 1])
    np.testing.assert_array_equal(flag.find_label_issues(scores, threshold=0.6), [False, True, True, True, False])


def test_estimated_number_on_a_bimodal_mixture():
    rng = np.random.default_rng(0)
    clean = np.clip(rng.normal(0.8, 0.07, 7000), 0, 1)
    noisy = np.clip(rng.normal(0.2, 0.07, 3000), 0, 1)
    scores = np.r_[clean, noisy]
    estimated = flag.estimate_num_issues(scores)
    assert abs(estimated - 3000) < 30
    mask = flag.find_label_issues(scores)
    assert mask.sum() == estimated and mask[7000:].mean() > 0.99


def _brute_auroc(detector: np.ndarray, truth: np.ndarray) -> float:
    """P(a noisy sample's detector value beats a clean one's), ties counted half: every pair."""
    pos, neg = detector[truth], detector[~truth]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size))


def _brute_average_precision(detector: np.ndarray, truth: np.ndarray) -> float:
    """Sum over the distinct thresholds, highest first, of (recall gained) x (precision there)."""
    total, recall_before = 0.0, 0.0
    for t in np.unique(detector)[::-1]:
        flagged = detector >= t
        recall = truth[flagged].sum() / truth.sum()
        total += (recall - recall_before) * truth[flagged].mean()
        recall_before = recall
    return total


def test_evaluate_against_brute_force():
    rng = np.random.default_rng(1)
    truth = rng.random(500) < 0.3
    scores = np.clip(np.where(truth, 0.4, 0.6) + rng.normal(0, 0.2, 500), 0, 1)
    scores[:50] = np.round(scores[:50], 1)  # ties
    got = flag.evaluate(scores, truth)
    assert got["auroc"] == pytest.approx(_brute_auroc(-scores, truth), rel=1e-12)
    assert got["average_precision"] == pytest.approx(_brute_average_precision(-scores, truth), rel=1e-12)
    k = truth.sum()
    assert got["precision_at_k"] == pytest.approx(truth[np.argsort(scores)[:k]].mean())
    perfect = flag.evaluate(np.where(truth, 0.1, 0.9), truth)
    assert perfect["auroc"] == 1.0 and perfect["average_precision"] == 1.0 and perfect["precision_at_k"] == 1.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: flag.label_quality_scores(np.zeros((2, 0))), "empty"),
        (lambda: flag.label_quality_scores(np.zeros((2, 2, 2))), "shape"),
        (lambda: flag.label_quality_scores(np.zeros(3), method="magic"), "method"),
        (lambda: flag.find_label_issues(np.array([0.1, np.nan])), "NaN"),
        (lambda: flag.find_label_issues(np.array([])), "empty"),
        (lambda: flag.find_label_issues(np.array([0.1, 0.2]), num_issues=3), "num_issues"),
        (lambda: flag.find_label_issues(np.array([0.1]), num_issues=1, threshold=0.5), "not both"),
        (lambda: flag.evaluate(np.array([0.1, 0.2]), np.array([True])), "noise_mask"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _dynamics(epochs: int, n: int = 1000, noisy: int = 300, memorise_at: int | None = None, seed: int = 0):
    """Margins of a run: clean samples learnt in the first epochs, wrong labels misfit until memorised."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)[:, None]
    learn = rng.integers(1, 4, n)  # epoch at which a sample is learnt
    margin = np.where(t >= learn, 3.0 + 0.05 * t, -2.0) + rng.normal(0, 0.5, (epochs, n))
    mask = np.zeros(n, bool)
    mask[:noisy] = True
    if memorise_at is not None:
        late = memorise_at + rng.integers(0, max(epochs // 10, 1), noisy)
        margin[:, :noisy] = np.where(t >= late, 3.0 + 0.1 * (t - late), -2.0) + rng.normal(0, 0.5, (epochs, noisy))
    else:
        margin[:, :noisy] = -2.0 + rng.normal(0, 0.5, (epochs, noisy))
    return margin, mask


def test_aum_score_is_the_sigmoid_of_the_mean_margin():
    margin = np.array([[1.0, -2.0, 0.0], [3.0, -1.0, np.nan]])
    got = flag.label_quality_scores(margin, method="aum", window="all")
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.array([2.0, -1.5, 0.0]))))
    big = flag.label_quality_scores(np.array([[800.0, -800.0]]), method="aum", window="all")
    assert big[0] == 1.0 and 0 <= big[1] < 1e-300  # no overflow warning, still in [0, 1]


def test_select_epochs_stops_before_memorisation():
    margin, mask = _dynamics(200, memorise_at=40)
    e = flag.select_epochs(margin)
    assert 4 <= e <= 45  # after the easy samples are learnt, before the wrong labels are memorised
    auto = flag.evaluate(flag.label_quality_scores(margin, method="aum"), mask, score="aum")
    whole = flag.evaluate(flag.label_quality_scores(margin, method="aum", window="all"), mask, score="aum")
    assert auto["auroc"] > 0.999 and auto["auroc"] > whole["auroc"]
    assert abs(auto["estimated_num_issues"] - 300) <= 15  # negative AUM over the window
    assert whole["estimated_num_issues"] < 150  # over all epochs the memorised wrong labels look clean


def test_select_epochs_on_clean_data_flags_almost_nothing():
    margin, _ = _dynamics(30, noisy=0)
    scores = flag.label_quality_scores(margin, method="aum")
    assert flag.estimate_num_issues(scores, score="aum") <= 5


def test_auto_window_for_other_signals_and_windows():
    margin, mask = _dynamics(50, memorise_at=20)
    loss = np.log1p(np.exp(-margin))  # any signal: averaged over the margins' window
    e = flag.select_epochs(margin)
    got = flag.label_quality_scores(loss, method="loss", window="auto", margin=margin)
    np.testing.assert_allclose(got, np.exp(-loss[:e].mean(0)))
    np.testing.assert_allclose(flag.label_quality_scores(loss, window=slice(2, 5)), np.exp(-loss[2:5].mean(0)))
    np.testing.assert_allclose(flag.label_quality_scores(loss, window="all"), np.exp(-loss.mean(0)))
    name, scores = flag.run_scores({"loss": loss, "margin": margin, "confidence": np.full_like(loss, np.nan)},
                                   method="superloss")
    assert name == flag.default_score("superloss") == "aum"
    np.testing.assert_allclose(scores, flag.label_quality_scores(margin, method="aum"))


def test_estimate_for_aum_counts_negative_margins():
    scores = np.array([0.1, 0.49, 0.5, 0.9, 0.2])
    assert flag.estimate_num_issues(scores, score="aum") == 3
    np.testing.assert_array_equal(flag.find_label_issues(scores, score="aum"), [True, True, False, False, True])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window="auto"), "margin"),
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window="auto", margin=np.zeros((3, 3))), "shape"),
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window=1.5), "fraction"),
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window="first"), "window"),
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window=slice(5, 6)), "no epoch"),
        (lambda: flag.label_quality_scores(np.zeros((2, 3)), window=1, last_epochs=1), "not both"),
        (lambda: flag.run_scores({"loss": np.zeros((2, 3))}, "aum"), "margin"),
        (lambda: flag.run_scores({"loss": np.zeros((2, 3))}, "magic"), "score"),
    ],
)
def test_window_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
