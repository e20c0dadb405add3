"""Ranking of likely mislabelled samples: scores, masks and evaluation against known answers and
scikit-learn's metrics."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

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


def test_evaluate_against_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.random(500) < 0.3
    scores = np.clip(np.where(truth, 0.4, 0.6) + rng.normal(0, 0.2, 500), 0, 1)
    scores[:50] = np.round(scores[:50], 1)  # ties
    got = flag.evaluate(scores, truth)
    assert got["auroc"] == pytest.approx(roc_auc_score(truth, -scores), rel=1e-12)
    assert got["average_precision"] == pytest.approx(average_precision_score(truth, -scores), rel=1e-12)
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
