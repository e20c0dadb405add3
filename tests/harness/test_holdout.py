"""curriculoss.harness.holdout: the noisy hold-out split, its metric per epoch and the epoch it selects."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness.checkpoint import CheckpointError, load_checkpoint
from curriculoss.harness.cli import main
from curriculoss.harness.holdout import Holdout, holdout_positions, selected_epoch
from curriculoss.harness.models import build_model
from curriculoss.harness.runfolder import METRIC_COLUMNS
from curriculoss.harness.train import TrainConfig, prepare_data, train
from curriculoss.signals import open_signals

from _helpers import (grid_argv, image_run_config, one_line_error, read_metrics, same_run_outputs,
                      train_stopped_after_epoch_two, write_pngs)

HOLDOUT_KEYS = {"selected", "selected_epoch", "holdout", "holdout_size"}


def _cfg(**kw) -> TrainConfig:
    base = dict(limit=300, epochs=4, batch_size=32, noise_rate=0.4, holdout=0.2, seed=3)
    return TrainConfig(**{**base, **kw})


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    """A run of 300 digits at 40 % symmetric noise, a fifth held out."""
    out = tmp_path_factory.mktemp("holdout") / "run"
    train(_cfg(), out, progress=False)
    return out


def test_without_holdout_nothing_is_added(tmp_path):
    cfg = _cfg(holdout=0.0, epochs=2)
    results = train(cfg, tmp_path / "run", progress=False)
    assert not HOLDOUT_KEYS & set(results) and not HOLDOUT_KEYS & set(_results(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.csv") as fh:
        assert tuple(next(csv.reader(fh))) == METRIC_COLUMNS
    assert not (tmp_path / "run" / "holdout_index.npy").exists()
    assert open_signals(tmp_path / "run")["loss"].shape == (2, 300)


def test_the_split_is_made_after_the_noise(noisy_run):
    cfg = _cfg()
    held = np.load(noisy_run / "holdout_index.npy")
    n = 300
    assert len(held) == round(0.2 * n) == 60 and len(set(held.tolist())) == 60 and held.min() >= 0 and held.max() < n
    # the documented split: the first round(f n) of default_rng(seed).permutation(n)
    np.testing.assert_array_equal(np.sort(held), np.sort(np.random.default_rng(cfg.seed).permutation(n)[:60]))
    fit = np.setdiff1d(np.arange(n), held)
    assert len(fit) == n - 60 and not set(fit.tolist()) & set(held.tolist())
    # the noise of the same configuration without a hold-out, restricted to the samples trained on
    data, noisy = prepare_data(replace(cfg, holdout=0.0))
    signals = open_signals(noisy_run)
    np.testing.assert_array_equal(signals["labels"], noisy.labels[fit])
    np.testing.assert_array_equal(signals["noise_mask"], noisy.mask[fit])
    np.testing.assert_array_equal(signals["true_labels"], data.y_train[fit])
    assert signals["loss"].shape == (cfg.epochs, n - 60)
    results = _results(noisy_run)
    assert results["holdout"] == 0.2 and results["holdout_size"] == 60
    assert results["realised_noise_rate"] == pytest.approx(noisy.mask[fit].mean())


def test_the_training_part_trains_on_the_same_noisy_labels_as_without_holdout(tmp_path, noisy_run):
    """The labels a run without a hold-out trains on (its signals), at the positions trained on here."""
    train(_cfg(holdout=0.0, epochs=1), tmp_path / "whole", progress=False)
    whole = open_signals(tmp_path / "whole")
    fit = np.setdiff1d(np.arange(300), np.load(noisy_run / "holdout_index.npy"))
    part = open_signals(noisy_run)
    for key in ("labels", "noise_mask", "true_labels"):
        np.testing.assert_array_equal(part[key], np.asarray(whole[key])[fit], err_msg=key)


def test_selected_is_the_test_metric_at_the_best_holdout_epoch(noisy_run):
    rows = _rows(noisy_run)
    scores = [float(r["holdout_metric"]) for r in rows]
    best = int(np.argmax(scores))  # the first of equal ones
    results = _results(noisy_run)
    assert results["selected"] == float(rows[best]["test_metric"])
    assert results["selected_epoch"] == best + 1 == int(rows[best]["epoch"])
    assert results["final"] == float(rows[-1]["test_metric"])  # reported beside, never instead
    assert all(0.0 <= s <= 1.0 for s in scores)


def _accuracy_of_final_model(run: Path, cfg: TrainConfig, labels: np.ndarray) -> float:
    """The accuracy, against `labels`, of the model in the run's checkpoint on its held-out inputs."""
    data, _ = prepare_data(replace(cfg, holdout=0.0))
    held = np.load(run / "holdout_index.npy")
    model = build_model(cfg.model, tuple(data.input_shape), data.num_classes)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.x_train[held])).argmax(1).numpy()
    return float((predicted == labels[held]).mean())


def test_the_holdout_metric_is_the_accuracy_against_the_noisy_labels(noisy_run):
    cfg = _cfg()
    data, noisy = prepare_data(replace(cfg, holdout=0.0))
    last = float(_rows(noisy_run)[-1]["holdout_metric"])
    assert last == pytest.approx(_accuracy_of_final_model(noisy_run, cfg, noisy.labels), abs=1e-12)


def test_without_noise_the_holdout_metric_is_the_true_accuracy(tmp_path):
    cfg = _cfg(noise_rate=0.0, epochs=2)
    train(cfg, tmp_path / "run", progress=False)
    data, _ = prepare_data(replace(cfg, holdout=0.0))
    last = float(_rows(tmp_path / "run")[-1]["holdout_metric"])
    assert last == pytest.approx(_accuracy_of_final_model(tmp_path / "run", cfg, data.y_train), abs=1e-12)


def test_regression_selects_the_lowest_mae(tmp_path):
    results = train(_cfg(task="regression", method="l2", lr=0.01, epochs=3), tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    scores = [float(r["holdout_metric"]) for r in rows]
    best = int(np.argmin(scores))
    assert all(s >= 0 for s in scores)
    assert results["selected_epoch"] == best + 1 and results["selected"] == float(rows[best]["test_metric"])


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "x", True])
def test_bad_fractions_are_refused_before_anything_is_written(tmp_path, value):
    with pytest.raises(ValueError, match="holdout"):
        train(_cfg(holdout=value), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", ["-0.1", "1.0", "x", "nan"])
def test_bad_fractions_on_the_command_line(tmp_path, capsys, text):
    error = one_line_error(capsys, ["train", "--limit", "64", "--holdout", text, "--out", str(tmp_path / "o")])
    assert "--holdout" in error and "[0, 1)" in error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", [0.001, 0.999])
def test_a_split_that_leaves_a_part_empty_is_refused(tmp_path, capsys, value):
    with pytest.raises(ValueError, match="holdout .* at least 1"):
        train(_cfg(limit=64, holdout=value), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    error = one_line_error(capsys, ["bench", "--limit", "64", "--holdout", str(value), "--methods", "ce",
                                    "--seeds", "0", "--quiet", "--out", str(tmp_path / "grid")])
    assert "holdout" in error and not (tmp_path / "grid").exists()


def test_a_streamed_image_folder_is_refused(tmp_path):
    write_pngs(tmp_path / "images")
    with pytest.raises(ValueError, match="--holdout is not supported with a streamed image folder; use --stream no"):
        train(image_run_config(tmp_path / "images", stream="yes", holdout=0.2), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_an_image_folder_in_memory_holds_out(tmp_path):
    write_pngs(tmp_path / "images")
    cfg = image_run_config(tmp_path / "images", stream="no", holdout=0.25, epochs=2)
    results = train(cfg, tmp_path / "o", progress=False)
    n = len(prepare_data(replace(cfg, holdout=0.0))[0].y_train)
    assert results["holdout_size"] == round(0.25 * n)
    assert open_signals(tmp_path / "o")["loss"].shape == (2, n - round(0.25 * n))


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch, noisy_run):
    cfg = _cfg()
    train_stopped_after_epoch_two(cfg, tmp_path / "cut", monkeypatch)
    assert len(_rows(tmp_path / "cut")) == 2 and "holdout_metric" in _rows(tmp_path / "cut")[0]
    results = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert read_metrics(tmp_path / "cut") == read_metrics(noisy_run)
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert drop(results) == drop(_results(noisy_run)) == drop(_results(tmp_path / "cut"))
    same_run_outputs(noisy_run, tmp_path / "cut")
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "holdout_index.npy"),
                                  np.load(noisy_run / "holdout_index.npy"))


def test_a_resume_with_another_fraction_is_refused(tmp_path, capsys, noisy_run):
    import shutil

    run = Path(shutil.copytree(noisy_run, tmp_path / "run"))
    with pytest.raises(CheckpointError, match="another configuration"):
        train(_cfg(holdout=0.3), run, resume=True, progress=False)
    error = one_line_error(capsys, ["train", "--resume", str(run), "--holdout", "0.3"])
    assert "--holdout (holdout 0.3, the run's 0.2)" in error


def test_bench_cells_report_the_selection(tmp_path):
    assert main(grid_argv(tmp_path / "grid", "--holdout", "0.25")) == 0
    cell = json.loads((tmp_path / "grid" / "ce" / "rate0.2" / "seed0" / "results.json").read_text())
    assert cell["holdout"] == 0.25 and cell["holdout_size"] == 16 and cell["selected_epoch"] == 1


def test_positions_and_selection_unit():
    fit, held = holdout_positions(10, 0.3, seed=0)
    assert len(held) == 3 and sorted([*fit, *held]) == list(range(10)) and list(held) == sorted(held)
    with pytest.raises(ValueError, match="holdout"):
        holdout_positions(1, 0.5, seed=0)
    held_part = Holdout(np.arange(4), None, None, 0.4)
    history = [{"epoch": e + 1, "test_metric": t, "holdout_metric": h}
               for e, (t, h) in enumerate([(0.1, 0.5), (0.2, math.nan), (0.3, 0.7), (0.4, 0.7), (0.5, 0.6)])]
    assert selected_epoch(history, held_part, regression=False) == {
        "selected": 0.3, "selected_epoch": 3, "holdout": 0.4, "holdout_size": 4}
    assert selected_epoch(history, held_part, regression=True)["selected_epoch"] == 1


def test_flag_ranks_the_samples_trained_on(tmp_path, capsys, noisy_run):
    import shutil

    run = Path(shutil.copytree(noisy_run, tmp_path / "run"))
    assert main(["flag", str(run)]) == 0
    assert "predicted_label is the last epoch's" not in capsys.readouterr().err  # the final model's, per sample
    with open(run / "suspects.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 300 - 60


def test_a_stamp_written_before_holdout_existed_is_of_holdout_zero(tmp_path):
    from curriculoss.harness.train import train_or_reuse

    cfg = _cfg(holdout=0.0, limit=64, epochs=1)
    folder = tmp_path / "cell"
    first = train_or_reuse(cfg, folder, stamp="config.json", progress=False)
    stamp = json.loads((folder / "config.json").read_text())
    del stamp["holdout"]
    (folder / "config.json").write_text(json.dumps(stamp))
    assert train_or_reuse(cfg, folder, stamp="config.json", trainer=None) == first
    with pytest.raises(ValueError, match="another configuration"):
        train_or_reuse(replace(cfg, holdout=0.25), folder, stamp="config.json")
