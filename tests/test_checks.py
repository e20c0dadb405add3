"""curriculoss.checks: the input checks and the reduction every loss shares, against hand-computed
values and the messages their docstrings promise."""
import math

import pytest
import torch

from curriculoss.checks import (check_class_weights, check_logits_target, check_number, check_reduction,
                                 check_target_values, compute_dtype, reduce)


def test_reduce_against_hand_computed_sums():
    values = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert reduce(values, "mean").item() == 3.0
    assert reduce(values, "sum").item() == 12.0
    assert torch.equal(reduce(values, "none"), values)


def test_reduction_is_one_of_torchs():
    for reduction in ("none", "mean", "sum"):
        check_reduction(reduction)
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', 'sum'\), got 'batchmean'"):
        check_reduction("batchmean")


@pytest.mark.parametrize("value, kw, ok", [
    (0.0, dict(low=0.0), True), (0.0, dict(low=0.0, low_open=True), False), (1e-9, dict(low=0.0, low_open=True), True),
    (1.0, dict(high=1.0), True), (1.0, dict(high=1.0, high_open=True), False), (-5, dict(), True),
    (math.inf, dict(), False), (math.nan, dict(), False),
])
def test_number_bounds(value, kw, ok):
    if ok:
        assert check_number("q", value, **kw) == float(value)
    else:
        with pytest.raises(ValueError, match=r"q must be a finite number in [\[(]"):
            check_number("q", value, **kw)


def test_number_message_names_the_interval_and_types_are_refused():
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \(0.0, 1.0\], got 0"):
        check_number("gamma", 0, low=0.0, high=1.0, low_open=True)
    for bad in (True, "1", None, 1j):
        with pytest.raises(TypeError, match="gamma must be a real number"):
            check_number("gamma", bad)
    assert isinstance(check_number("gamma", 3), float)


def test_logits_and_target_checks():
    z = torch.zeros(3, 4)
    out = check_logits_target(z, torch.tensor([0, 3, 1], dtype=torch.int32))
    assert out.dtype == torch.int64 and out.tolist() == [0, 3, 1]
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        check_logits_target(z, [0, 1, 2])
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        check_logits_target(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, C\), got \(3,\)"):
        check_logits_target(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) = \(3,\)"):
        check_logits_target(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer tensor of class indices"):
        check_logits_target(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\], got values in \[-1, 4\]"):
        check_logits_target(z, torch.tensor([-1, 4, 0]))
    # values=False leaves the range to the caller
    assert check_logits_target(z, torch.tensor([-1, 4, 0]), values=False).tolist() == [-1, 4, 0]
    check_target_values(torch.empty(0, dtype=torch.long), 2)  # nothing to read


def test_class_weights_shape_and_dtype():
    check_class_weights("alpha", torch.ones(4), 4)
    with pytest.raises(ValueError, match=r"alpha must have shape \(C,\) = \(4,\), got \(3,\)"):
        check_class_weights("alpha", torch.ones(3), 4)
    with pytest.raises(TypeError, match="alpha must be None, a float or a floating-point tensor"):
        check_class_weights("alpha", torch.ones(4, dtype=torch.long), 4)


def test_half_precision_is_computed_in_float32():
    for dtype, expected in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                            (torch.float32, torch.float32), (torch.float64, torch.float64)):
        assert compute_dtype(torch.zeros(2, dtype=dtype)).dtype == expected
