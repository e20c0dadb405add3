"""curriculoss._lambertw: the steps of W0 against scipy, and the precision each dtype is computed in."""
import math

import numpy as np
import pytest
import scipy.special
import torch

from curriculoss._lambertw import evaluate, half_delta_bounds, lambertw_forward, precision_of


def test_forward_matches_scipy():
    x = np.concatenate([[-0.367, -0.3, -1e-30, 0.0, 1e-30, 0.5, 1.0, math.e, 1e3, 1e300],
                        np.random.default_rng(0).uniform(-1 / math.e, 50, 200)])
    got = lambertw_forward(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, scipy.special.lambertw(x).real, rtol=1e-12, atol=1e-300)
    assert lambertw_forward(torch.tensor([math.e], dtype=torch.float64)).item() == pytest.approx(1.0, rel=1e-15)


def test_branch_point_infinity_and_below_the_domain():
    got = lambertw_forward(torch.tensor([-1 / math.e, math.inf, -1.0, math.nan], dtype=torch.float64))
    assert got[0].item() == -1.0 and got[1].item() == math.inf
    assert math.isnan(got[2].item()) and math.isnan(got[3].item())


def test_float32_pieces_match_scipy(monkeypatch):
    monkeypatch.setattr("curriculoss._lambertw._CPU_PIECE", 64)  # many pieces on a small tensor
    x = torch.linspace(-0.36, 30.0, 10_001, dtype=torch.float32)
    got = evaluate(x).numpy()
    np.testing.assert_allclose(got, scipy.special.lambertw(x.double().numpy()).real, rtol=2e-6, atol=2e-6)


def test_precision_and_bounds_per_dtype():
    assert precision_of(torch.float64) == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert precision_of(dtype) == torch.float32
    assert half_delta_bounds(torch.float32) == (1e-24, torch.finfo(torch.float32).max / 2)
    low, high = half_delta_bounds(torch.float64)
    assert 0 < low < 1e-200 and high == torch.finfo(torch.float64).max / 2
