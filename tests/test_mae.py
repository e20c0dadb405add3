"""curriculoss.mae: MAE on softmax outputs, `sum_k |p_k - e_yk| = 2 (1 - p_y)`, against hand-computed values
(the cases shared by every baseline loss run in `test_baselines.py`)."""
import math

import torch

from curriculoss import MAELoss, mae_loss

# softmax([0, ln 3]) = [1/4, 3/4] and softmax([0, 0, 0, 0]) = 1/4 each
Z = torch.tensor([[0.0, math.log(3), -math.inf, -math.inf], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([1, 2])


def test_known_values():
    expected = torch.tensor([2 * (1 - 3 / 4), 2 * (1 - 1 / 4)], dtype=torch.float64)
    torch.testing.assert_close(mae_loss(Z, Y, reduction="none"), expected)
    torch.testing.assert_close(mae_loss(Z, Y), expected.mean())
    torch.testing.assert_close(MAELoss(reduction="sum")(Z, Y), expected.sum())


def test_bounded_by_two():
    z = torch.tensor([[30.0, -30.0], [-30.0, 30.0]], dtype=torch.float64)
    torch.testing.assert_close(mae_loss(z, torch.tensor([1, 0]), reduction="none"),
                               torch.full((2,), 2.0, dtype=torch.float64))
