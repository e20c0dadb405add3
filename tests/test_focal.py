"""curriculoss.focal: the focal loss, `-alpha_t (1 - p_t)^gamma log p_t`, against hand-computed values
(the cases shared by every baseline loss run in `test_baselines.py`)."""
import math

import pytest
import torch

from curriculoss import FocalLoss, focal_loss

Z = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]], dtype=torch.float64)  # p = [1/4, 3/4] and [1/2, 1/2]
Y = torch.tensor([1, 0])


def test_known_values():
    fl = [(1 / 4) ** 2 * math.log(4 / 3), (1 / 2) ** 2 * math.log(2)]
    assert focal_loss(Z, Y, reduction="none").tolist() == pytest.approx(fl, rel=1e-12)
    # a per-class alpha weighs each sample by its label's entry; a float weighs them all
    alpha = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert focal_loss(Z, Y, alpha=alpha, reduction="none").tolist() == pytest.approx([0.25 * fl[0], 0.75 * fl[1]])
    assert focal_loss(Z, Y, alpha=0.5, reduction="sum").item() == pytest.approx(0.5 * sum(fl))
    assert FocalLoss(alpha=alpha)(Z, Y).item() == pytest.approx((0.25 * fl[0] + 0.75 * fl[1]) / 2)


def test_gamma_zero_is_cross_entropy():
    torch.testing.assert_close(focal_loss(Z, Y, gamma=0.0, reduction="none"),
                               torch.tensor([math.log(4 / 3), math.log(2)], dtype=torch.float64))
