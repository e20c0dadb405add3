"""curriculoss.harness.arguments: the command line's options, their checks and the configuration they give."""
from __future__ import annotations

import json
import os

import pytest

from curriculoss.harness.cli import main

from _helpers import TINY, TINY64, one_line_error as _error, write_pngs


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--method", "nope"], "invalid choice"),
        (["train", "--noise-rate", "1.5"], "--noise-rate"),
        (["bench", "--noise-rates", "0", "-0.1"], "--noise-rates"),
        (["train", "--dataset", "idx"], "--data-dir is required"),
        (["train", "--dataset", "idx", "--data-dir", "/nonexistent/dir"], "no such file"),
        (["train", "--model", "vgg"], "invalid choice"),
        (["train", "--epochs", "0"], "--epochs"),
    ],
)
def test_bad_arguments_are_clear_errors_and_write_nothing(tmp_path, capsys, argv, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code != 0
    captured = capsys.readouterr()
    assert needle in captured.err + str(exc.value)
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv,flag", [
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "1e300"], "--lr"), (["--lr", "0"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--weight-decay", "-1e-4"], "--weight-decay"), (["--lam", "0"], "--lam"),
    (["--imae-T", "360"], "--imae-T"), (["--dp-instance-lr", "-1"], "--dp-instance-lr"),
    (["--dp-class-lr", "nan"], "--dp-class-lr"), (["--tau", "nan"], "--tau"),
    (["--dp-instance-weight-decay", "-1"], "--dp-instance-weight-decay"),
    (["--dp-class-weight-decay", "inf"], "--dp-class-weight-decay"),
])
def test_non_finite_or_negative_rates_are_refused(tmp_path, capsys, argv, flag):
    # The reproduction: `train --lr nan` exited 0 with best accuracy 0.1; --lr 1e300 ended in a traceback.
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, *argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"curriculoss: error: argument {flag}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--milestones", "1"], "argument --milestones: only used with --schedule step"),
    (["--workers", "100000"], "argument --workers: expected an integer in [0, "),
    (["--workers", str(4 * (os.cpu_count() or 1) + 1)], "argument --workers"),
])
def test_options_out_of_place_or_range_are_refused(tmp_path, capsys, argv, needle):
    assert needle in _error(capsys, ["train", *TINY64, *argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_stream_flag_on_the_command_line(tmp_path):
    write_pngs(tmp_path / "D", per_class=4)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "D"), "--image-size", "8",
                 "--model", "lenet", "--stream", "yes", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "args.json").read_text())["stream"] == "yes"
    with pytest.raises(SystemExit):
        main(["train", "--stream", "sometimes"])
