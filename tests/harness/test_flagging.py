"""curriculoss.harness.flagging: `curriculoss flag` on run folders, signals folders and signals files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from curriculoss import flag
from curriculoss.harness.cli import main
from curriculoss.harness.train import TrainConfig, train
from curriculoss.recorder import Recorder
from curriculoss.signals import open_signals

from _helpers import (copy_named as _copy_named, copy_run as _copy, image_run_config as _cfg,
                      one_line_error as _error, write_pngs)


FOLDER_DAMAGE = {
    "no labels": (lambda d: (d / "labels.npy").unlink(), "no labels.npy"),
    "truncated table": (lambda d: (d / "margin.npy").write_bytes((d / "margin.npy").read_bytes()[:200]),
                        "margin.npy: the file is shorter than its header's shape (2, 64)"),
    "not a table": (lambda d: (d / "loss.npy").write_bytes(b"hello"), "loss.npy: not a .npy file"),
    "short labels": (lambda d: np.save(d / "labels.npy", np.zeros(50, np.int64)), "expected (epochs, 50) floats"),
    "float predictions": (lambda d: np.save(d / "predicted.npy", np.zeros(64)), "predicted.npy: float64 of shape (64,)"),
    "text mask": (lambda d: np.save(d / "noise_mask.npy", np.array(["a"] * 64)), "noise_mask.npy: <U1"),
    "more epochs than the run": (lambda d: [np.save(d / f"{k}.npy", np.zeros((40, 64), np.float32)) for k in
                                            ("loss", "confidence", "margin")], "the tables hold 40 epochs; the run"),
}


@pytest.mark.parametrize("case", list(FOLDER_DAMAGE))
def test_flag_refuses_a_damaged_signals_folder_naming_the_file(finished_run, tmp_path, capsys, case):
    damage, needle = FOLDER_DAMAGE[case]
    run = _copy(finished_run, tmp_path)
    damage(run / "signals")
    err = _error(capsys, ["flag", str(run)])
    assert err.startswith("curriculoss: error: ") and needle in err, err
    assert not (run / "suspects.csv").exists()


def test_flag_score_of_another_method_is_refused(finished_runs, tmp_path, capsys):
    run = _copy_named(finished_runs, "run", tmp_path)
    for score in ("superloss", "data-params"):
        assert f"argument --score: '{score}' reads the signal of a {score} run; {run} was trained with ce" in _error(
            capsys, ["flag", str(run), "--score", score])
    assert not (run / "suspects.csv").exists()
    # a bare signals file has no method to check: its confidence table holds nothing
    assert "holds no value in these signals" in _error(capsys, ["flag", str(run / "signals"), "--score",
                                                                "superloss"])


def test_flag_command_on_a_run_folder_and_on_old_signals(tmp_path, capsys):
    cfg = TrainConfig(dataset="digits", model="mlp", method="superloss", noise="pair", noise_rate=0.2, epochs=3, seed=0)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    assert main(["flag", str(run)]) == 0
    assert "scored by 'aum'" in capsys.readouterr().out  # SuperLoss runs are ranked by AUM too
    signals = {k: np.asarray(v) for k, v in open_signals(run).items()}
    _, scores = flag.run_scores(signals, method="superloss")
    suspects = np.genfromtxt(run / "suspects.csv", delimiter=",", names=True, dtype=None)
    flagged = np.zeros(len(scores), bool)
    flagged[suspects["index"][suspects["flagged"] == 1]] = True
    np.testing.assert_array_equal(flagged, flag.find_label_issues(scores, score="aum"))
    share = f"{flagged.sum()} of {len(flagged)} ({100 * flagged.mean():.1f} %) flagged"
    assert main(["flag", str(run), "--score", "superloss", "--window", "all"]) == 0
    assert main(["flag", str(run)]) == 0 and share in capsys.readouterr().out
    old = tmp_path / "old"
    old.mkdir()
    np.savez(old / "signals.npz", **{k: v for k, v in signals.items() if k != "margin"})
    with pytest.raises(SystemExit, match="margin"):
        main(["flag", str(old)])
    assert main(["flag", str(old / "signals.npz"), "--score", "loss"]) == 0


def test_the_command_flags_a_signals_npz_as_it_flags_the_same_signals_in_a_folder(tmp_path, capsys):
    from curriculoss.harness.cli import main

    n, g = 400, torch.Generator().manual_seed(2)
    wrong = torch.arange(n) % 5 == 0
    y_true = torch.randint(0, 4, (n,), generator=g)
    y = torch.where(wrong, (y_true + 1) % 4, y_true)
    memory, streamed = Recorder(n), Recorder(n, path=tmp_path / "folder" / "signals")
    for epoch in range(6):
        z = torch.nn.functional.one_hot(y_true, 4) * (0.5 + epoch) + torch.randn(n, 4, generator=g)
        for idx in torch.randperm(n, generator=g).split(50):
            for rec in (memory, streamed):
                rec.update(idx, z[idx], y[idx])
        memory.end_epoch()
        streamed.end_epoch()
    memory.save(tmp_path / "old", noise_mask=wrong.numpy())
    streamed.save(noise_mask=wrong.numpy())
    printed = []
    for target in (tmp_path / "old", tmp_path / "folder"):
        assert main(["flag", str(target)]) == 0
        printed.append(capsys.readouterr().out.replace(str(target), "RUN"))
    assert printed[0] == printed[1]
    for name in ("suspects.csv", "flag.json"):
        assert (tmp_path / "old" / name).read_text() == (tmp_path / "folder" / name).read_text()


def test_flag_predicts_a_streamed_set_as_the_in_memory_one(tmp_path, monkeypatch):
    """``curriculoss flag`` on a streamed run decodes the images per batch (no whole array in memory) and
    gets the predictions the in-memory arrays give."""
    from dataclasses import replace

    from curriculoss.harness import epoch, flagging

    write_pngs(tmp_path / "D", per_class=5)
    cfg = _cfg(tmp_path / "D", stream="yes", epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    streamed_batches = []
    real = epoch.stream_loader
    monkeypatch.setattr(epoch, "stream_loader", lambda *a, **k: streamed_batches.append(a[3]) or real(*a, **k))
    streamed = flagging._predictions(tmp_path / "run", cfg)
    assert streamed_batches, "the streamed run's predictions did not stream"
    in_memory = flagging._predictions(tmp_path / "run", replace(cfg, stream="no"))
    np.testing.assert_array_equal(streamed, in_memory)
    assert main(["flag", str(tmp_path / "run")]) == 0
