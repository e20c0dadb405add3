"""curriculoss.harness.train: one run end to end, its data, model, noise file and outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness import data as datasets, train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.data.imagefolder import ImageFiles
from curriculoss.harness.train import TrainConfig, train
from curriculoss.signals import open_signals

from _helpers import (TINY, TINY64, assert_cpu_checkpoint as _assert_cpu_checkpoint, copy_named as _copy_named,
                      image_run_config as _cfg, one_line_error as _error, read_metrics as _read_metrics,
                      write_cifar10_python, write_png_folder, write_pngs)


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


@pytest.mark.parametrize("case", ["uint64 beyond int64", "truncated"])
def test_an_unreadable_noise_file_is_named(tmp_path, capsys, case):
    path = tmp_path / "noisy.npy"
    np.save(path, np.full(64, 2 ** 63 + 5, np.uint64))
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    err = _error(capsys, ["train", *TINY64, "--noise", "file", "--noise-file", str(path), "--out", str(tmp_path / "o")])
    assert str(path) in err and not (tmp_path / "o").exists()


def test_a_finished_cell_of_another_configuration_is_not_reused(finished_runs, tmp_path, capsys):
    grid = _copy_named(finished_runs, "grid", tmp_path)
    args = grid / "ce" / "rate0.2" / "seed0" / "args.json"
    args.write_text(json.dumps({**json.loads(args.read_text()), "batch_size": 16}))
    assert main(["bench", "--resume", str(grid), "--quiet"]) == 2
    assert "holds a finished run of another configuration" in capsys.readouterr().err


def _train_wrn_crop_flip_superloss(tmp_path: Path, dataset: str, *extra: str) -> Path:
    """One epoch of `curriculoss train` of a WRN-16-4 with SuperLoss and crop-flip on TMP_PATH/D; its run folder."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--data-dir", str(tmp_path / "D"), "--model", "wrn16-4", "--augment",
                 "crop-flip", "--method", "superloss", "--epochs", "1", *extra, "--quiet", "--out", str(out)]) == 0
    return out


def test_train_cifar10_wrn_crop_flip_superloss(tmp_path):
    write_cifar10_python(tmp_path / "D")
    out = _train_wrn_crop_flip_superloss(tmp_path, "cifar10", "--batch-size", "16", "--device", "cpu")
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["final"] <= 1.0
    assert json.loads((out / "args.json").read_text())["augment"] == "crop-flip"
    _assert_cpu_checkpoint(out)


def test_train_imagefolder_png(tmp_path):
    write_png_folder(tmp_path / "D" / "train", per_class=8)
    write_png_folder(tmp_path / "D" / "test", per_class=2, seed=1)
    out = _train_wrn_crop_flip_superloss(tmp_path, "imagefolder", "--batch-size", "8", "--image-size", "32")
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    _assert_cpu_checkpoint(out)


def test_compile_wraps_the_model(tmp_path, monkeypatch):
    seen = []

    def fake_compile(model, *args, **kwargs):  # the wiring only; a real compile is minutes on 2 CPU cores
        seen.append(model)
        return model
    monkeypatch.setattr(torch, "compile", fake_compile)
    train(TrainConfig(limit=32, epochs=1, compile=True), tmp_path / "run", progress=False)
    assert len(seen) == 1 and isinstance(seen[0], torch.nn.Module)
    # compile is not part of what was trained: the run resumes without it.
    train(TrainConfig(limit=32, epochs=1), tmp_path / "run", resume=True, progress=False)


def test_compile_fuses_superloss(tmp_path, monkeypatch):
    """With --compile, SuperLoss runs its whole step through the fused path (SuperLoss(fused=True))."""
    import sys

    core = sys.modules["curriculoss.superloss"]
    calls, step = [], core.fused_step

    def fused_step(*args):
        calls.append(len(args[0]))
        return step(*args)
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)
    monkeypatch.setattr(core, "fused_step", fused_step)
    train(TrainConfig(limit=64, epochs=1, method="superloss", compile=True), tmp_path / "run", progress=False)
    assert sum(calls) == len(open_signals(tmp_path / "run")["labels"])  # every training sample, once
    calls.clear()
    train(TrainConfig(limit=64, epochs=1, method="superloss"), tmp_path / "plain", progress=False)
    assert calls == []


def test_auto_streams_only_what_does_not_fit(tmp_path):
    write_pngs(tmp_path / "D", per_class=3)
    decoded = 9 * 3 * 8 * 8 * 4
    load = lambda memory: datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, stream=None, memory=memory)
    assert isinstance(load(4 * decoded - 4).x_train, ImageFiles)
    assert isinstance(load(4 * decoded).x_train, np.ndarray)
    assert isinstance(load(None).x_train, np.ndarray)  # memory unknown: in memory, as before
    free = train_mod.available_memory(torch.device("cpu"))
    assert free is None or free > 0


def test_auto_mode_of_the_config(tmp_path, monkeypatch):
    write_pngs(tmp_path / "D", per_class=3)
    monkeypatch.setattr(train_mod, "available_memory", lambda device=None: 1000)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D"))
    assert isinstance(data.x_train, ImageFiles)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D"), stream=False)
    assert isinstance(data.x_train, np.ndarray)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D", stream="no"))
    assert isinstance(data.x_train, np.ndarray)
