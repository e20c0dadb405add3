"""curriculoss._superloss: Eqs. 3-4 element-wise against a numerical minimisation of Eq. 1 over sigma."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from curriculoss._superloss import compute_dtype, elementwise


def _minimum(loss: float, tau: float, lam: float) -> tuple[float, float]:
    """min over sigma > 0 of (loss - tau) sigma + lam (log sigma)^2, searched over log sigma."""
    f = lambda t: (loss - tau) * math.exp(t) + lam * t * t
    res = minimize_scalar(f, bounds=(-30.0, 1.0), method="bounded", options={"xatol": 1e-12})
    return res.fun, math.exp(res.x)


@pytest.mark.parametrize("tau, lam", [(1.0, 1.0), (2.3, 0.25), (0.0, 4.0)])
def test_elementwise_is_the_minimum_of_eq1(tau, lam):
    # beta = (loss - tau) / lam from just above the cap -2/e to large
    beta = np.array([-0.7, -0.5, -0.1, 0.0, 0.3, 1.0, 4.0, 20.0])
    loss = torch.tensor(tau + lam * beta, dtype=torch.float64)
    sl, sigma = elementwise(loss.clone(), None, tau, lam, torch.float64)
    for i, l in enumerate(loss.tolist()):
        value, best = _minimum(l, tau, lam)
        assert sigma[i].item() == pytest.approx(best, rel=1e-5)
        assert sl[i].item() == pytest.approx(value, rel=1e-8, abs=1e-10)


def test_at_and_below_the_cap_sigma_is_e():
    tau, lam = 1.0, 0.5
    loss = torch.tensor([tau - 2 * lam / math.e, tau - lam, tau - 10.0], dtype=torch.float64)
    sl, sigma = elementwise(loss.clone(), None, tau, lam, torch.float64)
    torch.testing.assert_close(sigma, torch.full((3,), math.e, dtype=torch.float64))
    # log sigma = 1 at the cap: SL = (loss - tau) e + lam
    torch.testing.assert_close(sl, (loss - tau) * math.e + lam)


def test_sigma_of_another_source():
    """`source` sets sigma* (e.g. smoothed losses); SL is evaluated at `loss` with that sigma*."""
    loss, source = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    sl, sigma = elementwise(loss.clone(), source, 1.0, 1.0, torch.float64)
    assert sigma.item() == pytest.approx(1.0, rel=1e-12)  # beta = 0: sigma* = 1
    assert sl.item() == pytest.approx(1.0, rel=1e-12)  # (2 - 1) * 1 + 0


@pytest.mark.parametrize("dtype, computed_in", [(torch.float64, torch.float64), (torch.float32, torch.float32),
                                                (torch.float16, torch.float32), (torch.bfloat16, torch.float32)])
def test_compute_dtype(dtype, computed_in):
    assert compute_dtype(dtype) == computed_in
