"""curriculoss.harness.checkpoint: what a checkpoint holds, its checks, and exact resume."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness import train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.train import CheckpointError, TrainConfig, train
from curriculoss.recorder import SIGNALS
from curriculoss.signals import Table, open_signals

from _helpers import (assert_cpu_checkpoint as _assert_cpu_checkpoint, copy_named as _copy_named, copy_run as _copy,
                      image_run_config as _cfg, one_line_error as _error, read_metrics as _read_metrics,
                      same_run_outputs as _same_run_outputs, spawn_train as _spawn_train, stamps as _stamps,
                      train_stopped_after_epoch_two as _train_stopped_after_epoch_two, write_cifar10_python,
                      write_pngs)


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
    _same_run_outputs(reference, killed)  # signals, weights, method state and history


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    cfg = TrainConfig(limit=100, epochs=1, batch_size=50)
    train(cfg, tmp_path, progress=False)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(cfg, tmp_path, resume=True, progress=False)
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2


def _tamper(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


TAMPERED = {
    "epoch -2": (lambda s: s.update(epoch=-2), "field epoch is -2; expected an integer in [1, 2]"),
    "epoch 7": (lambda s: s.update(epoch=7), "field epoch is 7"),
    "no optimizer": (lambda s: s.pop("optimizer"), "missing field(s) optimizer"),
    "history": (lambda s: s.update(history=s["history"][:1]), "field history holds 1 epochs, field epoch says 2"),
    "model weights": (lambda s: s["model"].update({k: v[:3] for k, v in s["model"].items()}),
                      "cannot restore the run from it (RuntimeError"),
    "config": (lambda s: s["config"].update(epochs="2"), "field config is not a valid configuration (epochs must"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused_naming_the_field(finished_run, tmp_path, capsys, case):
    run = _copy(finished_run, tmp_path)
    change, needle = TAMPERED[case]
    _tamper(run / "checkpoint.pt", change)
    before = _stamps(run)
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert err.startswith(f"curriculoss: error: {run / 'checkpoint.pt'}: ") and needle in err, err
    assert _stamps(run) == before


def test_a_full_disk_while_checkpointing_loses_nothing(finished_run, tmp_path, capsys, monkeypatch):
    run = _copy(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()

    def full(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert err.startswith(f"curriculoss: error: {run / 'checkpoint.pt'}: {os.strerror(errno.ENOSPC)}")
    assert "checkpoint.pt.tmp was removed" in err
    assert not (run / "checkpoint.pt.tmp").exists() and (run / "checkpoint.pt").read_bytes() == before


def test_resume_with_more_epochs_and_another_device_is_recorded(finished_runs, tmp_path):
    run = _copy_named(finished_runs, "run", tmp_path)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # epoch 3 follows the 3-epoch cosine schedule (the finished run's rate had reached 0)
    assert float(rows[2]["lr"]) == pytest.approx(0.03 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))
    assert json.loads((run / "args.json").read_text())["epochs"] == 3
    assert json.loads((run / "results.json").read_text())["epochs"] == 3
    assert json.loads((run / "resumes.json").read_text()) == [
        {"epoch": 2, "changed": {"epochs": {"from": 2, "to": 3}, "device": {"from": "auto", "to": "cpu"}}}]
    assert open_signals(run)["loss"].shape == (3, 64)


def _cifar_cfg(tmp_path: Path, device, **kw) -> TrainConfig:
    write_cifar10_python(tmp_path / "D", per_batch=6)
    base = dict(dataset="cifar10", data_dir=str(tmp_path / "D"), model="lenet", method="superloss",
                noise_rate=0.3, epochs=3, batch_size=8, device=str(device))
    return TrainConfig(**{**base, **kw})


def test_interrupted_run_with_crop_flip_resumes_exactly(tmp_path, device, monkeypatch):
    cfg = _cifar_cfg(tmp_path, device)
    train(cfg, tmp_path / "ref", progress=False)
    ref = open_signals(tmp_path / "ref")

    _train_stopped_after_epoch_two(cfg, tmp_path / "cut", monkeypatch)  # the run dies mid-way
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    cut = open_signals(tmp_path / "cut")
    np.testing.assert_array_equal(ref["loss"], cut["loss"])
    np.testing.assert_array_equal(ref["confidence"], cut["confidence"])


def test_checkpoint_is_cpu_only_and_resumes_on_the_cpu(tmp_path, device):
    # Trained on the suite's device (a GPU with --device cuda), continued on the CPU.
    cfg = _cifar_cfg(tmp_path, device, method="data-params", epochs=2)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "run", progress=False)
    state = _assert_cpu_checkpoint(tmp_path / "run")
    assert state["epoch"] == 2
    # Same run, three epochs planned: a different configuration, refused...
    with pytest.raises(train_mod.CheckpointError, match="another configuration"):
        train(TrainConfig(**{**cfg.__dict__, "epochs": 3}), tmp_path / "run", resume=True, progress=False)
    # ...but another device is not another configuration.
    out = train(TrainConfig(**{**cfg.__dict__, "device": "cpu"}), tmp_path / "run", resume=True, progress=False)
    assert out["epochs"] == 2


def test_resume_from_a_checkpoint_written_before_the_recorder(tmp_path):
    """A checkpoint with the old (epochs, N) loss_signal / conf_signal tables resumes; its epochs keep
    their losses and have no margins."""
    cfg = TrainConfig(dataset="digits", model="mlp", method="ce", noise="symmetric", noise_rate=0.2, epochs=3, seed=0)
    full = tmp_path / "full"
    train(cfg, full, progress=False)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    state = torch.load(full / "checkpoint.pt", weights_only=True)
    # rewind to epoch 2 in the old format: NaN rows ahead of the finished epochs
    state.pop("recorder")
    finished = open_signals(full)
    n = finished["loss"].shape[1]
    loss = torch.full((3, n), float("nan"))
    loss[:2] = torch.from_numpy(finished["loss"][:2])
    conf = torch.full((3, n), float("nan"))
    state.update(loss_signal=loss, conf_signal=conf, epoch=2)
    torch.save(state, part / "checkpoint.pt")
    train(cfg, part, resume=True, progress=False)
    got = open_signals(part)
    np.testing.assert_array_equal(got["loss"][:2], finished["loss"][:2])
    assert np.isnan(got["margin"][:2]).all() and np.isfinite(got["margin"][2]).all()


def test_a_run_of_the_in_memory_format_resumes_exactly_into_a_signals_folder(tmp_path, monkeypatch):
    """A run folder as version 0.2.0 left it (the tables in the checkpoint, signals.npz) resumes: the
    tables move to `signals/`, the stale signals.npz goes, and every value equals an uninterrupted run's."""
    cfg = TrainConfig(dataset="digits", model="mlp", method="superloss", noise="symmetric", noise_rate=0.2, epochs=3,
                      seed=0)
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, full, progress=False)
    _train_stopped_after_epoch_two(cfg, part, monkeypatch)
    tables = {k: torch.from_numpy(np.asarray(Table(part / "signals" / f"{k}.npy"))) for k in SIGNALS}
    state = torch.load(part / "checkpoint.pt", weights_only=True)
    state["recorder"] = {**tables, "labels": state["recorder"]["labels"], "predicted": state["recorder"]["predicted"]}
    torch.save(state, part / "checkpoint.pt")
    shutil.rmtree(part / "signals")
    np.savez(part / "signals.npz", **{k: v.numpy() for k, v in tables.items()})
    train(cfg, part, resume=True, progress=False)
    assert (part / "signals").is_dir() and not (part / "signals.npz").exists()
    a, b = open_signals(full), open_signals(part)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_streamed_run_resumes_exactly(tmp_path, monkeypatch, device):
    write_pngs(tmp_path / "D")
    cfg = _cfg(tmp_path / "D", device, stream="yes")
    train(cfg, tmp_path / "ref", progress=False)
    _train_stopped_after_epoch_two(cfg, tmp_path / "cut", monkeypatch)
    # resumed from the command line, streamed: the run's own configuration, exactly replayed
    assert main(["train", "--resume", str(tmp_path / "cut"), "--stream", "yes", "--quiet"]) == 0
    assert json.loads((tmp_path / "cut" / "args.json").read_text())["stream"] == "yes"
    _same_run_outputs(tmp_path / "ref", tmp_path / "cut", exact=device.type == "cpu")
