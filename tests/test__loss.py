"""curriculoss._loss: the loss Modules' base and `log p_y`, against hand-computed values."""
import math

import pytest
import torch

from curriculoss import MAELoss
from curriculoss._loss import Loss, checked_log_prob_target, log_prob_target


def test_log_prob_target_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 2, ln 2, 0]) = [2/5, 2/5, 1/5]
    z = torch.tensor([[0.0, math.log(3), -math.inf], [math.log(2), math.log(2), 0.0]], dtype=torch.float64)
    got = log_prob_target(z, torch.tensor([1, 2]))
    torch.testing.assert_close(got, torch.tensor([math.log(3 / 4), math.log(1 / 5)], dtype=torch.float64))


def test_checked_form_checks_and_computes_half_precision_in_float32():
    z = torch.tensor([[0.0, math.log(3)]], dtype=torch.float16)
    got = checked_log_prob_target(z, torch.tensor([1]), "mean")
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(math.log(3 / 4), abs=1e-3)  # float16 rounding of ln 3
    with pytest.raises(ValueError, match="reduction"):
        checked_log_prob_target(z, torch.tensor([1]), "batchmean")
    with pytest.raises(ValueError, match="target"):
        checked_log_prob_target(z, torch.tensor([1, 0]), "mean")


class _Scaled(Loss):
    _settings = ("reduction", "scale")

    def __init__(self, scale: float = 2.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.scale = scale


def test_base_checks_the_reduction_and_shows_the_settings():
    assert _Scaled(0.5, "sum").extra_repr() == "reduction='sum', scale=0.5"
    assert "reduction='mean'" in repr(MAELoss())
    with pytest.raises(ValueError, match="reduction must be one of"):
        _Scaled(reduction="batchmean")
    assert list(_Scaled().parameters()) == [] and _Scaled().state_dict() == {}
