"""curriculoss.gce: GCE, `(1 - p_y^q) / q`, against hand-computed values (the cases shared by every
baseline loss run in `test_baselines.py`)."""
import math

import pytest
import torch

from curriculoss import GCELoss, gce_loss

Z = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)  # p = [1/4, 3/4]
Y = torch.tensor([1])


@pytest.mark.parametrize("q", [0.25, 0.5, 0.7, 1.0])
def test_known_values(q):
    expected = (1 - 0.75 ** q) / q
    assert gce_loss(Z, Y, q=q).item() == pytest.approx(expected, rel=1e-12)
    assert GCELoss(q=q, reduction="sum")(Z, Y).item() == pytest.approx(expected, rel=1e-12)


def test_q_one_half_by_hand():
    assert gce_loss(Z, Y, q=0.5).item() == pytest.approx(2 * (1 - math.sqrt(3) / 2), rel=1e-12)
