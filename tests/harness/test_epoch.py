"""curriculoss.harness.epoch: one epoch's step, batches and loader."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from curriculoss.harness import train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.train import TrainConfig, train
from curriculoss.signals import open_signals

from _helpers import (TINY, assert_cpu_checkpoint as _assert_cpu_checkpoint, image_run_config as _cfg,
                      same_run_outputs as _same_run_outputs, write_pngs)


@pytest.mark.parametrize("amp, method", [("bf16", "superloss"), ("fp16", "data-params")])
def test_mixed_precision_keeps_the_loss_state_dtype(tmp_path, device, amp, method):
    if device.type == "cpu" and amp == "fp16":
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                torch.nn.Linear(2, 2)(torch.randn(1, 2))
        except RuntimeError:
            pytest.skip("this torch has no float16 autocast on the CPU")
    cfg = TrainConfig(limit=96, epochs=2, method=method, noise_rate=0.2, amp=amp, device=str(device), model="lenet")
    results = train(cfg, tmp_path / "run", progress=False)
    assert math.isfinite(results["final"])
    state = _assert_cpu_checkpoint(tmp_path / "run")
    if method == "superloss":
        assert state["method"]["criterion.smoothed_loss"].dtype == torch.float64
    else:
        assert "scaler" in state
        assert all(v.dtype == torch.float32 for k, v in state["method"].items() if "sigma" in k)
    assert np.isfinite(open_signals(tmp_path / "run")["loss"]).all()


@pytest.mark.parametrize("method, workers", [("superloss", 0), ("data-params", 1)])
def test_streamed_training_is_identical_to_in_memory(tmp_path, method, workers, device):
    # on the suite's device: with --device cuda the streamed batches come through pinned memory
    write_pngs(tmp_path / "D")
    train(_cfg(tmp_path / "D", device, method=method, stream="no"), tmp_path / "mem", progress=False)
    train(_cfg(tmp_path / "D", device, method=method, stream="yes", workers=workers), tmp_path / "st", progress=False)
    _same_run_outputs(tmp_path / "mem", tmp_path / "st", exact=device.type == "cpu")


def test_the_loader_leaves_the_global_rng_alone():
    # A DataLoader draws its workers' base seed from the global generator unless given its own: the
    # streamed run would then draw different dropout masks (or anything else seeded globally).
    class Fake:
        shape = (4, 3, 2, 2)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3, 2, 2), float(i))

    for workers in (0, 1):
        loader = train_mod._stream_loader(Fake(), workers, torch.device("cpu"), [[2, 0], [], [1, 3]])
        before = torch.get_rng_state()
        batches = [b[:, 0, 0, 0].tolist() for b in loader]
        assert batches == [[2.0, 0.0], [], [1.0, 3.0]]  # the given batches, in order; an empty one too
        assert torch.equal(before, torch.get_rng_state())


def test_metrics_record_the_share_at_the_cap_and_the_mean_confidence(tmp_path):
    out = tmp_path / "sl"
    # lr 0.1: fast enough for some losses to fall below tau - 2/e within 3 epochs of 300 samples
    assert main(["train", *TINY, "--method", "superloss", "--lr", "0.1", "--noise-rate", "0.4", "--out", str(out)]) == 0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    conf = open_signals(out)["confidence"]  # the per-sample signal table, recorded separately
    for epoch, row in enumerate(rows):
        assert float(row["sl_mean_sigma"]) == pytest.approx(conf[epoch].mean(), rel=1e-5)
        assert float(row["sl_cap_share"]) == pytest.approx((conf[epoch] >= np.float32(math.e) * (1 - 1e-6)).mean())
    assert any(float(r["sl_cap_share"]) > 0 for r in rows)
    out = tmp_path / "ce"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    with open(out / "metrics.csv") as fh:
        assert all(math.isnan(float(r["sl_cap_share"])) for r in csv.DictReader(fh))
