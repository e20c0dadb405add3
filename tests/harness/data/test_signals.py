"""curriculoss.harness.data.signals: a malformed signals.npz is refused naming its member."""
import numpy as np
import pytest

from _helpers import copy_run as _copy, one_line_error as _error, signals_of as _signals, without as _without


MALFORMED = {
    "no labels": (lambda s: _without(s, "labels"), "member labels is missing"),
    "short margin": (lambda s: {**s, "margin": s["margin"][:, :50]}, "member margin: has shape (2, 50); expected (epochs, 64)"),
    "short labels": (lambda s: {**s, "labels": s["labels"][:50]}, "member loss: has shape (2, 64); expected (epochs, 50)"),
    "long noise mask": (lambda s: {**s, "noise_mask": np.zeros(70, bool)}, "member noise_mask: has shape (70,)"),
    "text margins": (lambda s: {**s, "margin": s["margin"].astype(str)}, "member margin: holds text"),
    "complex margins": (lambda s: {**s, "margin": s["margin"].astype(complex)}, "member margin: holds complex"),
    "boolean margins": (lambda s: {**s, "margin": s["margin"] > 0}, "member margin: holds booleans"),
    "float labels": (lambda s: {**s, "labels": s["labels"].astype(float)}, "member labels: holds floats"),
    "tables of two shapes": (lambda s: {**s, "loss": s["loss"][:1]}, "differ in shape"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_flag_refuses_a_malformed_member_naming_it(finished_run, tmp_path, capsys, case):
    change, needle = MALFORMED[case]
    path = tmp_path / "signals.npz"
    np.savez(path, **change(_signals(finished_run)))
    err = _error(capsys, ["flag", str(path)])
    assert err.startswith(f"curriculoss: error: {path}: ") and needle in err, err
    assert not (tmp_path / "suspects.csv").exists()


def test_flag_refuses_more_epochs_than_the_run_has(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path, npz=True)
    signals = _signals(finished_run)
    np.savez(run / "signals.npz", **{**signals, **{k: np.zeros((40, 64), np.float32) for k in ("loss", "margin")}})
    assert "member loss: has 40 epochs; the run (args.json) has 2" in _error(capsys, ["flag", str(run)])
