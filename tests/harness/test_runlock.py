"""curriculoss.harness.runlock: one run per run folder."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from curriculoss.harness.cli import main
from curriculoss.harness.runlock import RunFolderInUse, run_folder_lock
from curriculoss.harness.train import TrainConfig, train

from _helpers import TINY, grid_argv as _grid, spawn_train as _spawn_train


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


def test_run_folder_lock_is_exclusive_and_released(tmp_path):
    from curriculoss.harness.runlock import run_folder_lock

    with run_folder_lock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunFolderInUse, match=f"run folder {tmp_path / 'r'} is in use .*process {os.getpid()}"):
            with run_folder_lock(tmp_path / "r"):
                pass
    with run_folder_lock(tmp_path / "r"):  # released on exit
        pass


def test_bench_folder_is_locked_while_written(tmp_path, capsys):
    out = tmp_path / "grid"
    with run_folder_lock(out):
        assert main(_grid(out)) == 2
    assert f"run folder {out} is in use by another run (process {os.getpid()}" in capsys.readouterr().err
    assert not (out / "grid.json").exists()
