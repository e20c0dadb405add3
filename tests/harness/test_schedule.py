"""curriculoss.harness.schedule: the learning rate of each epoch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from curriculoss.harness.train import TrainConfig, train


def _lrs(tmp_path, **kw) -> list[float]:
    out = tmp_path / "s"
    train(TrainConfig(limit=32, lr=0.1, **kw), out, progress=False)
    import csv
    with open(out / "metrics.csv") as fh:
        return [float(r["lr"]) for r in csv.DictReader(fh)]


def test_step_schedule_with_warmup(tmp_path):
    lrs = _lrs(tmp_path, epochs=6, schedule="step", milestones=[3, 5], gamma=0.2, warmup=2)
    # warmup 0.1 * 1/3, 0.1 * 2/3; then 0.1 until epoch 3, 0.02 until 5, 0.004
    np.testing.assert_allclose(lrs, [0.1 / 3, 0.2 / 3, 0.1, 0.02, 0.02, 0.004], rtol=1e-12)


def test_cosine_schedule_with_warmup(tmp_path):
    lrs = _lrs(tmp_path, epochs=5, schedule="cosine", warmup=1)
    expected = [0.05] + [0.05 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


def test_lr_factor_by_hand():
    from curriculoss.harness.schedule import lr_factor

    cosine = lr_factor(TrainConfig(epochs=6, warmup=2, schedule="cosine"))
    # warmup (e + 1) / 3, then half a cosine over the remaining 4 epochs
    assert [cosine(e) for e in range(6)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                                           0.5 * (1 + math.cos(3 * math.pi / 4))], rel=1e-12)
    step = lr_factor(TrainConfig(epochs=6, warmup=0, schedule="step", milestones=[3, 5], gamma=0.1))
    assert [step(e) for e in range(6)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01], rel=1e-12)


def test_scheduler_and_reschedule_set_the_hand_computed_rates():
    from curriculoss.harness.schedule import make_scheduler, reschedule

    cfg = TrainConfig(epochs=4, warmup=0, schedule="cosine")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = make_scheduler(optimizer, cfg)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-12)
    # resumed for 8 epochs at epoch 4: the 8-epoch cosine from there, 0.2 * (1 + cos(pi / 2)) / 2
    reschedule(optimizer, scheduler, TrainConfig(epochs=8, warmup=0, schedule="cosine"), 4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1, rel=1e-12)
