"""curriculoss.harness.config: `TrainConfig`, its checks and its forms in a run folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from curriculoss.harness import train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.methods import MethodOptions
from curriculoss.harness.train import TrainConfig, train

from _helpers import TINY, copy_run as _copy, one_line_error as _error, stamps as _stamps


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("lr", -0.1), ("lr", 1e300), ("momentum", 1.0),
                                         ("weight_decay", float("inf")), ("epochs", 0)])
def test_train_api_checks_the_configuration(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train(TrainConfig(**{"limit": 50, "epochs": 1, field: value}), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_regression_base_loss_on_classification_and_empty_training_set(tmp_path, capsys):
    assert main(["train", *TINY, "--method", "superloss", "--base-loss", "l2", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("curriculoss: error: --base-loss l2 does not fit a classification task") and err.count("\n") == 1
    assert main(["train", *TINY, "--task", "regression", "--method", "superloss", "--base-loss", "ce",
                 "--out", str(tmp_path / "b")]) == 2
    assert "--base-loss ce does not fit a regression task" in capsys.readouterr().err
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 3)), y=np.zeros(0, np.int64), x_test=np.ones((4, 3)), y_test=np.arange(4) % 2)
    assert main(["train", *TINY, "--dataset", "npz", "--data-dir", str(empty), "--out", str(tmp_path / "c")]) == 2
    assert f"curriculoss: error: {empty}: the training set is empty" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "flag"])
def test_a_string_where_args_json_holds_a_number_is_refused(finished_run, tmp_path, capsys, command):
    run = _copy(finished_run, tmp_path)
    args = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**args, "noise_rate": "0.4"}))
    before = _stamps(run)
    argv = ["train", "--resume", str(run), "--quiet"] if command == "train" else ["flag", str(run)]
    err = _error(capsys, argv)
    assert err.startswith(f"curriculoss: error: {run / 'args.json'}: ") and "noise_rate must be a number, got '0.4'" in err
    assert _stamps(run) == before


@pytest.mark.parametrize("field, value, match", [
    ("schedule", "linear", "schedule must be"), ("warmup", 5, "warmup must be"), ("milestones", [3, 2], "milestones"),
    ("gamma", 0.0, "gamma"), ("amp", "fp8", "amp must be"), ("augment", "mixup", "augment must be"),
    ("model", "wrn", "model must be"),
])
def test_bad_settings_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        train_mod.check_config(TrainConfig(epochs=5, **{field: value}))


@pytest.mark.parametrize("value, match", [("sometimes", "stream must be"), ("yes", "is for dataset imagefolder")])
def test_bad_stream_settings_are_named(value, match):
    with pytest.raises(ValueError, match=match):
        train_mod.check_config(TrainConfig(dataset="digits", stream=value))


def test_old_configurations_keep_the_paper_step():
    cfg = TrainConfig.from_json({"method": "superloss", "options": {"tau": "avg"}})
    assert cfg.options.sl_normalise is False
    assert MethodOptions().sl_normalise is True
    assert TrainConfig.from_json(TrainConfig().to_json()).options.sl_normalise is True
