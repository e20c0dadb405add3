"""The command line end to end on tiny configurations: run folders, the grid, exact resume after SIGKILL,
clear errors."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.cli import main
from curriculoss.train import CheckpointError, TrainConfig, load_checkpoint, train

TINY = ["--dataset", "digits", "--limit", "300", "--epochs", "3", "--batch-size", "32", "--quiet"]


def _read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.pop("seconds")
    return rows


@pytest.mark.parametrize("method", ["ce", "superloss", "data-params", "imae", "gce", "sce", "focal", "mae"])
def test_train_writes_the_run_folder(tmp_path, method):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", method, "--noise-rate", "0.4", "--out", str(out)]) == 0
    for name in ("args.json", "metrics.csv", "signals.npz", "results.json", "checkpoint.pt", "curves.png"):
        assert (out / name).exists(), name
    rows = _read_metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    signals = np.load(out / "signals.npz")
    n = 300
    assert signals["loss"].shape == (3, n) and signals["confidence"].shape == (3, n)
    assert np.isfinite(signals["loss"]).all()
    assert signals["labels"].shape == signals["true_labels"].shape == signals["noise_mask"].shape == (n,)
    np.testing.assert_array_equal(signals["noise_mask"], signals["labels"] != signals["true_labels"])
    assert 0.2 < signals["noise_mask"].mean() < 0.5  # 40 % symmetric, 9/10 of them change
    if method in ("superloss", "data-params", "imae"):
        assert np.isfinite(signals["confidence"]).all()
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "accuracy" and 0 <= results["final"] <= 1


def test_regression_task(tmp_path):
    out = tmp_path / "reg"
    assert main(["train", *TINY, "--task", "regression", "--method", "superloss", "--base-loss", "smooth-l1",
                 "--tau", "0.5", "--noise-rate", "0.2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "mae" and results["final"] >= 0


def _spawn_train(out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "curriculoss", "train", "--dataset", "digits", "--limit", "800", "--epochs", "6",
            "--batch-size", "8", "--method", "data-params", "--noise-rate", "0.4", "--quiet", "--out", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigkill_then_resume_ends_identical(tmp_path):
    reference = tmp_path / "ref"
    proc = _spawn_train(reference)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()

    killed = tmp_path / "killed"
    # Kill once mid-run (after the first checkpoint, during a later epoch), then once soon after resuming.
    proc = _spawn_train(killed)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = subprocess.Popen([sys.executable, "-m", "curriculoss", "train", "--resume", str(killed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # metrics.csv follows the first checkpoint, so a kill between the two leaves none: no epoch recorded
    recorded = len(_read_metrics(killed)) if (killed / "metrics.csv").exists() else 0
    assert recorded < 6, "the run finished before it was killed: the test proves nothing"
    proc = subprocess.run([sys.executable, "-m", "curriculoss", "train", "--resume", str(killed), "--quiet"],
                          capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _read_metrics(killed) == _read_metrics(reference)
    a, b = np.load(reference / "signals.npz"), np.load(killed / "signals.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    sa, sb = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    for key in sa["method"]:
        assert torch.equal(sa["method"][key], sb["method"][key]), key


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    cfg = TrainConfig(limit=100, epochs=1, batch_size=50)
    train(cfg, tmp_path, progress=False)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(cfg, tmp_path, resume=True, progress=False)
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2


def test_bench_grid_summary_and_resume(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["bench", *TINY, "--methods", "ce", "superloss", "--noise-rates", "0", "0.4", "--seeds", "0", "1",
            "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| superloss | 40% |" in printed and "| ce | 0% |" in printed
    for name in ("summary.md", "summary.csv", "summary.png", "grid.json"):
        assert (out / name).exists(), name
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["seeds"] == "2" for r in rows)
    # finished cells are not recomputed
    stamp = (out / "ce" / "rate0.4" / "seed1" / "results.json").stat().st_mtime_ns
    assert main(["bench", "--resume", str(out), "--quiet"]) == 0
    assert (out / "ce" / "rate0.4" / "seed1" / "results.json").stat().st_mtime_ns == stamp


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


def test_module_entry_point_matches_console_script():
    proc = subprocess.run([sys.executable, "-m", "curriculoss", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "bench" in proc.stdout and "train" in proc.stdout
