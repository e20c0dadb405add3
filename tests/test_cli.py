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

from curriculoss.harness.cli import main
from curriculoss.harness.runlock import RunFolderInUse
from curriculoss.harness.train import CheckpointError, TrainConfig, load_checkpoint, train
from curriculoss.signals import open_signals

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
    for name in ("args.json", "metrics.csv", "signals", "results.json", "checkpoint.pt", "curves.png"):
        assert (out / name).exists(), name
    rows = _read_metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    signals = open_signals(out)
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
    a, b = open_signals(reference), open_signals(killed)
    for key in a:
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


# ----------------------------------------------------------------------------------------------------------
# Robustness: one run per folder, validated rates, one-line errors, closed pipes, grid duplicates
# ----------------------------------------------------------------------------------------------------------

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


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


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("lr", -0.1), ("lr", 1e300), ("momentum", 1.0),
                                         ("weight_decay", float("inf")), ("epochs", 0)])
def test_train_api_checks_the_configuration(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train(TrainConfig(**{"limit": 50, "epochs": 1, field: value}), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def _wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        lock = folder / ".lock"
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"the first run never locked {folder} (exit {proc.poll()})")


def test_second_run_on_a_folder_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _spawn_train(out)  # data-params, 6 epochs
    try:
        _wait_for_lock(out, proc)
        # the reproduction: a second train on the same --out used to interleave its files with the first's
        assert main(["train", *TINY, "--method", "superloss", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"run folder {out} is in use by another run (process {proc.pid}" in err
        with pytest.raises(RunFolderInUse, match="in use"):  # through the API too
            train(TrainConfig(limit=50, epochs=1), out, progress=False)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the first run's files are its own, and its lock, left behind by SIGKILL, is stale: the kernel
    # released it, so --resume takes the folder over
    assert json.loads((out / "args.json").read_text())["method"] == "data-params"
    assert (out / ".lock").read_text().strip() == str(proc.pid)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 6


def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert main(["train", *TINY, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"curriculoss: error: {out}: ") and err.count("\n") == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_in_a_read_only_folder_is_a_one_line_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", *TINY, "--out", str(ro / "run")]) == 2
        assert capsys.readouterr().err.startswith(f"curriculoss: error: {ro / 'run'}: ")
    finally:
        ro.chmod(0o755)


def test_bad_files_name_themselves(tmp_path, capsys):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("f,label\n1.5,0\n2.5,1\n\xe9t\xe9,1\n".encode("latin-1"))
    assert main(["train", *TINY, "--dataset", "csv", "--data-dir", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"curriculoss: error: {bad}: not UTF-8" in capsys.readouterr().err
    noise = tmp_path / "noise.csv"
    noise.write_bytes(b"\xff\xfe1\n")
    assert main(["train", *TINY, "--noise", "file", "--noise-file", str(noise), "--out", str(tmp_path / "o")]) == 2
    assert f"curriculoss: error: {noise}: not UTF-8" in capsys.readouterr().err
    # a broken args.json, for --resume and for flag; a broken grid.json for bench --resume
    run = tmp_path / "run"
    run.mkdir()
    for text in ('{"method": "ce",', "[1, 2]", '{"lr": "fast"}', '{"lr": NaN}'):
        (run / "args.json").write_text(text)
        with pytest.raises(SystemExit) as exc:
            main(["train", "--resume", str(run), "--quiet"])
        assert str(exc.value).startswith(f"curriculoss: error: {run / 'args.json'}: ")
    for name in ("signals.npz", "checkpoint.pt"):
        (run / name).write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main(["flag", str(run)])
    assert str(exc.value).startswith(f"curriculoss: error: {run / 'args.json'}: ")
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "grid.json").write_bytes(b"\x80{")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--resume", str(tmp_path / "grid"), "--quiet"])
    assert str(exc.value).startswith(f"curriculoss: error: {tmp_path / 'grid' / 'grid.json'}: ")


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


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_closed_pipe_exits_quietly(tmp_path, reader):
    cmd = (f"set -o pipefail; {sys.executable} -m curriculoss train --limit 100 --epochs 1 --quiet "
           f"--out {tmp_path / 'run'} | {reader}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV, timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode in (0, 141)  # 141: ended by the closed pipe, like `yes | head -1`


def test_bench_repeated_values_are_one_run(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["bench", *TINY, "--epochs", "1", "--methods", "ce", "ce", "--noise-rates", "0.4", "0.4",
                 "--seeds", "0", "0", "--out", str(out)]) == 0
    assert "--seeds repeats values; using 0" in capsys.readouterr().err
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["seeds"] == "1"
    assert json.loads((out / "grid.json").read_text())["seeds"] == [0]


def test_run_folder_lock_is_exclusive_and_released(tmp_path):
    from curriculoss.harness.runlock import run_folder_lock

    with run_folder_lock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunFolderInUse, match=f"run folder {tmp_path / 'r'} is in use .*process {os.getpid()}"):
            with run_folder_lock(tmp_path / "r"):
                pass
    with run_folder_lock(tmp_path / "r"):  # released on exit
        pass
