"""curriculoss.sce: symmetric cross-entropy, `alpha (-log p_y) - beta A (1 - p_y)`, against hand-computed
values (the cases shared by every baseline loss run in `test_baselines.py`)."""
import math

import pytest
import torch

from curriculoss import SCELoss, sce_loss

Z = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]], dtype=torch.float64)  # p = [1/4, 3/4] and [1/2, 1/2]
Y = torch.tensor([1, 0])


def test_known_values_with_the_papers_defaults():
    # alpha = 0.1, beta = 1, A = -4: 0.1 * ln(4/3) + 4 * 1/4 and 0.1 * ln 2 + 4 * 1/2
    expected = [0.1 * math.log(4 / 3) + 1.0, 0.1 * math.log(2) + 2.0]
    assert sce_loss(Z, Y, reduction="none").tolist() == pytest.approx(expected, rel=1e-12)
    assert SCELoss()(Z, Y).item() == pytest.approx(sum(expected) / 2, rel=1e-12)


def test_other_settings_by_hand():
    got = sce_loss(Z, Y, alpha=6.0, beta=0.1, A=math.log(1e-4), reduction="sum").item()
    expected = sum(6.0 * -math.log(p) - 0.1 * math.log(1e-4) * (1 - p) for p in (3 / 4, 1 / 2))
    assert got == pytest.approx(expected, rel=1e-12)
