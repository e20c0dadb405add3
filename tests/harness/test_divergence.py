"""curriculoss.harness.divergence: telling a collapsed run from a finished one."""
import csv
import json
import math

import numpy as np
import pytest

from curriculoss.harness import divergence
from curriculoss.harness.cli import main
from curriculoss.harness.train import TrainConfig, train

from _helpers import TINY


def _rows(accs, losses=None):
    losses = losses or [1.0] * len(accs)
    return [{"epoch": i + 1, "train_loss": loss, "train_acc_noisy": a} for i, (a, loss) in enumerate(zip(accs, losses))]


def test_chance_is_the_most_frequent_label():
    assert divergence.chance_accuracy(np.arange(100) % 10, 10) == pytest.approx(0.1)
    assert divergence.chance_accuracy(np.array([0] * 70 + [1] * 30), 2) == pytest.approx(0.7)
    assert divergence.chance_accuracy(np.array([3, 3]), 10) == pytest.approx(1.0)
    assert divergence.chance_accuracy(np.array([], dtype=np.int64), 4) == pytest.approx(0.25)


def test_window_accuracies_match_hand_computed_quarters():
    correct = [30, 32, 31, 29, 5, 6, 7, 6]
    sizes = [64] * 8  # 512 samples: two windows of at least 256
    peak, last = divergence.window_accuracies(correct, sizes)
    assert peak == pytest.approx(122 / 256) and last == pytest.approx(24 / 256)
    sizes = [256] * 8  # 2048 samples: four windows of two batches
    peak, last = divergence.window_accuracies(correct, sizes)
    assert peak == pytest.approx(62 / 512) and last == pytest.approx(13 / 512)
    assert divergence.window_accuracies([10], [100]) == (pytest.approx(0.1), pytest.approx(0.1))
    assert all(math.isnan(v) for v in divergence.window_accuracies([], []))


@pytest.mark.parametrize("accs, expected", [
    ([0.5, 0.8, 0.9, 0.92], None),            # learning
    ([0.1, 0.11, 0.1, 0.1], None),            # never above chance: not learning, but no collapse
    ([0.22, 0.26, 0.28, 0.27], None),         # 80 % symmetric noise: low but above chance
    ([0.5, 0.8, 0.11, 0.11], 3),              # collapsed in epoch 3
    ([0.5, 0.8, 0.13, 0.11, 0.1], 4),         # 0.13 is not yet at chance
    ([0.3, 0.1], 2),                          # the run's last epoch counts alone
    ([0.3, 0.24, 0.11, 0.4, 0.6], None),      # one epoch at chance, then learning again: a dip
])
def test_collapse_to_chance(accs, expected):
    epoch, why = divergence.find_divergence(_rows(accs), 0.1, complete=True)
    assert epoch == expected
    assert (why != "") == (expected is not None)


def test_collapse_inside_an_epoch_is_seen_by_its_quarters_at_the_next_epoch():
    rows = _rows([0.2, 0.11, 0.1])  # the first epoch's mean hides the take-off ...
    assert divergence.find_divergence(rows, 0.1)[0] is None
    rows[0]["train_acc_peak"] = 0.45  # ... its best quarter does not
    assert divergence.find_divergence(rows, 0.1)[0] == 2
    assert divergence.find_divergence(rows[:2], 0.1)[0] is None  # mid-run: one epoch at chance is not enough yet
    # a first epoch that took off late (low mean, high last quarter) is not a collapse
    assert divergence.find_divergence([{**_rows([0.13])[0], "train_acc_peak": 0.32}], 0.1)[0] is None


def test_slow_learning_at_noise_is_not_a_collapse():
    # measured (digits moved, MLP, IMAE, lr 0.01, 40 % noise): it dips and recovers; chance 0.119
    accs = [0.101, 0.129, 0.202, 0.232, 0.229, 0.229, 0.186, 0.160, 0.178, 0.263, 0.266]
    assert divergence.find_divergence(_rows(accs), 0.119, complete=True)[0] is None
    # measured (digits moved, MLP, MAE, lr 0.03, 0 % noise): one epoch at chance in epoch 4, then 65 %
    accs = [0.141, 0.238, 0.157, 0.112, 0.330, 0.388, 0.431, 0.535, 0.578]
    assert divergence.find_divergence(_rows(accs), 0.1, complete=True)[0] is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_diverges_also_in_regression(bad):
    for chance in (0.1, None):
        epoch, why = divergence.find_divergence(_rows([0.5, 0.6, 0.6], [1.0, bad, 1.0]), chance)
        assert epoch == 2 and "loss" in why
    assert divergence.find_divergence(_rows([0.5, 0.1]), None)[0] is None  # regression: accuracy is not read


def test_results_and_cli_report_a_diverged_run(tmp_path, capsys):
    out = tmp_path / "nan"
    assert main(["train", *TINY, "--lr", "1e6", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["diverged"] is True and results["diverged_epoch"] == 1
    assert "nan" in results["divergence"] and "--lr" in results["divergence"]
    assert "stopped_early" not in results
    with open(out / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert "DIVERGED in epoch 1" in capsys.readouterr().err


def test_stop_on_divergence_stops_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "stop"
    assert main(["train", *TINY, "--lr", "1e6", "--stop-on-divergence", "--out", str(out)]) == 3
    results = json.loads((out / "results.json").read_text())
    assert results["diverged"] and results["stopped_early"] and results["epochs_trained"] == 1
    with open(out / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 1
    err = capsys.readouterr().err
    assert "DIVERGED in epoch 1" in err and "stopped after epoch 1 of 3" in err and "what to try" in err


def test_a_healthy_run_is_not_diverged(tmp_path):
    results = train(TrainConfig(limit=300, epochs=2, batch_size=32), tmp_path / "ok", progress=False)
    assert results["diverged"] is False and results["diverged_epoch"] is None
