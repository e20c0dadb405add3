"""curriculoss.harness.plots: the sample groups against hand-picked ones, and each figure's data against
what its docstring says it shows."""
import numpy as np
import pytest

from curriculoss.harness import plots

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_sample_groups_by_hand():
    # mean losses over the 2 epochs: 1, 2, 3, 4, 5 for the clean samples (one with an infinite epoch,
    # left out of its mean), 9 for the noisy one; the 75th percentile of 1..5 is 4: 4 and 5 are hard
    loss = np.array([[1, 2, 3, 4, 5, 9], [1, 2, np.inf, 4, 5, 9]], dtype=float)
    groups = plots.sample_groups(loss, np.array([0, 0, 0, 0, 0, 1], dtype=bool))
    assert groups["noisy"].tolist() == [False] * 5 + [True]
    assert groups["hard"].tolist() == [False, False, False, True, True, False]
    assert groups["easy"].tolist() == [True, True, True, False, False, False]


def test_confidence_by_group_draws_each_groups_median():
    confidence = np.array([[1.0, 2.0, 3.0, 10.0], [2.0, 4.0, 6.0, 20.0]])
    groups = {"easy": np.array([1, 1, 1, 0], bool), "hard": np.zeros(4, bool), "noisy": np.array([0, 0, 0, 1], bool)}
    fig = plots.confidence_by_group(confidence, groups)
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines}
    assert set(lines) == {"easy (3)", "noisy (1)"}  # an empty group is not drawn
    np.testing.assert_array_equal(lines["easy (3)"], [2.0, 4.0])
    np.testing.assert_array_equal(lines["noisy (1)"], [10.0, 20.0])


def test_data_parameters_share_of_corrupt_samples_in_the_top():
    sigma = np.array([[5.0, 1.0, 2.0, 4.0, 3.0], [1.0, 5.0, 4.0, 2.0, 3.0]])
    noisy = np.array([1, 0, 0, 1, 0], bool)
    fig, ax = plt.subplots()
    assert plots.data_parameters_by_group(sigma, noisy, top=0.4, ax=ax) is fig
    # top 40 % = 2 samples: epoch 1 holds both corrupt samples (0 and 3), epoch 2 neither
    share = fig.axes[1].lines[0].get_ydata()
    np.testing.assert_array_equal(share, [100.0, 0.0])
    means = {line.get_label(): line.get_ydata() for line in ax.lines}
    np.testing.assert_array_equal(means["noisy"], [4.5, 1.5])
    np.testing.assert_array_equal(means["clean"], [2.0, 4.0])


def test_score_histogram_counts_each_group():
    scores = np.array([0.05, 0.15, 0.95, 0.9, 0.85, 0.12])
    noisy = np.array([1, 1, 0, 0, 0, 0], bool)
    fig = plots.score_histogram(scores, noisy, bins=10)
    heights = [patch.get_height() for patch in fig.axes[0].patches]
    assert len(heights) == 20 and sum(heights[:10]) == 4 and sum(heights[10:]) == 2  # clean, then noisy
    assert heights[10 + 0] == 1 and heights[10 + 1] == 1 and heights[9] == 2 and heights[8] == 1
    fig = plots.score_histogram(scores)
    assert sum(patch.get_height() for patch in fig.axes[0].patches) == 6


def test_training_curves_and_save_figure(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "test_metric": 0.5 + e / 10, "train_acc_noisy": 0.4,
                "train_acc_true": 0.6} for e in (1, 2, 3)]
    fig = plots.training_curves(history, "acc")
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 1 / 3])
    assert [line.get_label() for line in fig.axes[1].lines] == [
        "test acc", "train acc (noisy labels)", "train acc (true labels)"]
    assert plots.save_figure(tmp_path / "c.png", plots.training_curves, history, "acc") is True
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
