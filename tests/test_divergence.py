"""No silent collapse: the divergence check, its record in results.json, the command line's report and
--stop-on-divergence; SuperLoss's per-epoch cap statistics and its normalised step in the harness."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from curriculoss.harness import divergence
from curriculoss.harness.bench import format_table, memorisation_gaps, summarise
from curriculoss.harness.cli import main
from curriculoss.harness.methods import MethodOptions, SuperLossMethod
from curriculoss.superloss import SuperLoss
from curriculoss.harness.train import TrainConfig, train
from curriculoss.signals import open_signals

TINY = ["--dataset", "digits", "--limit", "300", "--epochs", "3", "--batch-size", "32", "--quiet"]


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


def test_bench_table_counts_diverged_cells_and_prints_no_spread_for_one_seed():
    rows = [{"method": "ce", "noise_rate": 0.4, "seed": s, "metric": "accuracy", "best": 0.9, "final": f,
             "seconds": 1.0, "diverged": d} for s, (f, d) in enumerate([(0.8, False), (0.1, True), (0.7, False)])]
    rows.append({"method": "imae", "noise_rate": 0.0, "seed": 0, "metric": "accuracy", "best": 0.5, "final": 0.4,
                 "seconds": 1.0})
    table = format_table(summarise(rows))
    ce = next(line for line in table.splitlines() if line.startswith("| ce"))
    assert "**1/3**" in ce and "53.33 ±" in ce  # the collapsed seed stays in the mean: (80 + 10 + 70) / 3
    imae = next(line for line in table.splitlines() if line.startswith("| imae"))
    assert "± 0.00" not in imae and "(1 seed)" in imae and "0/1" in imae
    assert "40% noise +36.67" in memorisation_gaps(summarise(rows))


# --- SuperLoss: share at the cap and the normalised step ---------------------------------------------

def test_at_cap_marks_beta_at_or_below_minus_two_over_e():
    lam, tau = 0.5, 1.0
    loss = torch.tensor([0.0, 0.5, 1.0 - 2 * lam / math.e - 1e-9, 1.0 - 2 * lam / math.e + 1e-6, 1.0, 3.0],
                        dtype=torch.float64)
    module = SuperLoss(tau=tau, lam=lam)
    module(loss)
    beta = (loss.numpy() - tau) / lam  # independent: the definition of the cap in Eq. 4 (errata 1)
    np.testing.assert_array_equal(module.at_cap.numpy(), beta <= -2 / math.e)
    torch.testing.assert_close(module.confidence[module.at_cap], torch.full((3,), math.e, dtype=torch.float64))


def test_metrics_record_the_share_at_the_cap_and_the_mean_confidence(tmp_path):
    out = tmp_path / "sl"
    # lr 0.1: fast enough for some losses to fall below tau - 2/e within 3 epochs of 300 samples
    assert main(["train", *TINY, "--method", "superloss", "--lr", "0.1", "--noise-rate", "0.4", "--out", str(out)]) == 0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    conf = open_signals(out)["confidence"]  # the per-sample signal table, recorded separately
    for epoch, row in enumerate(rows):
        assert float(row["sl_mean_sigma"]) == pytest.approx(conf[epoch].mean(), rel=1e-5)
        assert float(row["sl_cap_share"]) == pytest.approx((conf[epoch] >= np.float32(math.e) * (1 - 1e-6)).mean())
    assert any(float(r["sl_cap_share"]) > 0 for r in rows)
    out = tmp_path / "ce"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    with open(out / "metrics.csv") as fh:
        assert all(math.isnan(float(r["sl_cap_share"])) for r in csv.DictReader(fh))


@pytest.mark.parametrize("normalise", [True, False])
def test_harness_step_is_the_confidence_weighted_mean(normalise):
    torch.manual_seed(0)
    loss = (torch.rand(16, dtype=torch.float64) * 4).requires_grad_()
    method = SuperLossMethod(lambda z, y: z, SuperLoss(tau=2.0, lam=1.0, step="normalised" if normalise else "paper"))
    method(loss, None, torch.arange(16)).backward()
    # independent: sigma* = exp(-W(max(-2/e, beta)/2)) from scipy
    from scipy.special import lambertw as scipy_w

    beta = (loss.detach().numpy() - 2.0) / 1.0
    capped = beta <= -2 / math.e
    sigma = np.where(capped, math.e, np.exp(-np.real(scipy_w(np.where(capped, 0.0, beta) / 2))))
    assert capped.any() and not capped.all()
    expected = sigma / sigma.sum() if normalise else sigma / 16
    np.testing.assert_allclose(loss.grad.numpy(), expected, rtol=1e-7)


def test_old_configurations_keep_the_paper_step():
    cfg = TrainConfig.from_json({"method": "superloss", "options": {"tau": "avg"}})
    assert cfg.options.sl_normalise is False
    assert MethodOptions().sl_normalise is True
    assert TrainConfig.from_json(TrainConfig().to_json()).options.sl_normalise is True
