"""curriculoss.harness.methods: each method's loss step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from curriculoss.harness.methods import SuperLossMethod
from curriculoss.superloss import SuperLoss

from _helpers import Float64Spy


def test_superloss_method_in_float32_for_devices_without_float64(monkeypatch):
    """On MPS (no float64) the loop calls ``method.float()`` and sums in float32: the SuperLoss method's
    step then makes no float64 tensor (checked on the CPU, with the MPS accumulator dtype forced)."""
    from curriculoss.harness import methods

    monkeypatch.setattr(methods, "accumulator_dtype", lambda device: torch.float32)
    method = methods.build_method("superloss", methods.MethodOptions(), 10, 50).float()
    logits = torch.randn(16, 10, requires_grad=True)
    target, index = torch.randint(0, 10, (16,)), torch.randperm(50)[:16]
    with Float64Spy() as spy:
        for _ in range(2):
            method(logits, target, index).backward()
    assert spy.seen == []
    assert method.epoch_sums().dtype == torch.float32


@pytest.mark.parametrize("normalise", [True, False])
def test_harness_step_is_the_confidence_weighted_mean(normalise):
    torch.manual_seed(0)
    loss = (torch.rand(16, dtype=torch.float64) * 4).requires_grad_()
    method = SuperLossMethod(lambda z, y: z, SuperLoss(tau=2.0, lam=1.0, step="normalised" if normalise else "paper"))
    method(loss, None, torch.arange(16)).backward()
    # independent: sigma* = exp(-W(max(-2/e, beta)/2)) from scipy
    from scipy.special import lambertw as scipy_w

    beta = (loss.detach().numpy() - 2.0) / 1.0
    capped = beta <= -2 / math.e
    sigma = np.where(capped, math.e, np.exp(-np.real(scipy_w(np.where(capped, 0.0, beta) / 2))))
    assert capped.any() and not capped.all()
    expected = sigma / sigma.sum() if normalise else sigma / 16
    np.testing.assert_allclose(loss.grad.numpy(), expected, rtol=1e-7)


def test_plain_methods_are_the_mean_of_hand_computed_losses():
    from curriculoss.harness.methods import MethodOptions, build_method

    # uniform logits over 4 classes: CE = ln 4 and MAE = 2 (1 - 1/4) for every sample
    z, y = torch.zeros(3, 4, dtype=torch.float64), torch.tensor([0, 3, 1])
    ce = build_method("ce", MethodOptions(), 4, 10)
    assert ce(z, y, torch.arange(3)).item() == pytest.approx(math.log(4), rel=1e-12)
    torch.testing.assert_close(ce.per_sample_loss, torch.full((3,), math.log(4), dtype=torch.float64))
    assert build_method("mae", MethodOptions(), 4, 10)(z, y, torch.arange(3)).item() == pytest.approx(1.5, rel=1e-12)
    # regression: squared error per sample, summed over the outputs, an (N, 1) output squeezed
    out, target = torch.tensor([[1.0], [3.0]], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert build_method("l2", MethodOptions(), None, 2)(out, target, torch.arange(2)).item() == pytest.approx(2.5)
    two = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    l2 = build_method("l2", MethodOptions(), None, 2)
    l2(two, torch.zeros(2, 2, dtype=torch.float64), torch.arange(2))
    torch.testing.assert_close(l2.per_sample_loss, torch.tensor([5.0, 0.0], dtype=torch.float64))


def test_build_method_refuses_a_method_for_the_other_task():
    from curriculoss.harness.methods import MethodOptions, build_method

    with pytest.raises(ValueError, match="method must be one of"):
        build_method("nope", MethodOptions(), 4, 10)
    with pytest.raises(ValueError, match="'ce' is for classification"):
        build_method("ce", MethodOptions(), None, 10)
    with pytest.raises(ValueError, match="'l2' is for regression"):
        build_method("l2", MethodOptions(), 4, 10)
