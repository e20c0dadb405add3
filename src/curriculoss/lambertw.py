"""The principal branch W0 of the Lambert W function, tensor-native and differentiable.

``W(x)`` is the solution ``w >= -1`` of ``w * exp(w) = x``, defined for ``x >= -1/e``. The SuperLoss
needs it for its closed-form confidence (Castells et al. 2020, Eq. 4); computing it with scipy on the
host would copy every batch's losses to the CPU and break ``torch.compile``. This module evaluates it
with a fixed sequence of element-wise tensor operations: no data-dependent control flow, no
host-device synchronisation, any device (``meta`` included), any batch shape.

Method, per element (all branches are evaluated and the right one is selected with ``torch.where``):

1. ``|x| < 1e-4``: the Taylor series ``x - x^2 + 3/2 x^3 - 8/3 x^4 + 125/24 x^5`` (exact for
   subnormals, where an iteration on ``log(x / w)`` would lose everything).
2. Near the branch point: with ``p = sqrt(2 (e x + 1))``, the series
   ``W = -1 + p - p^2/3 + 11/72 p^3 - ...`` (Corless et al. 1996, Eq. 4.22; 14 terms, coefficients
   from their recurrence). ``e x + 1`` is formed as ``e * ((x + c_hi) + c_lo)`` with ``c_hi + c_lo = 1/e``
   split in the working precision, so that the cancellation near ``-1/e`` costs nothing. Used as the
   result for ``p < 0.1`` in float64 (truncation error < 1e-17) and ``p < 0.3`` in float32 (< 3e-11),
   and as the starting point for ``x < -0.25``.
3. Elsewhere: Winitzki's approximation ``L (1 - log(1 + L) / (2 + L))``, ``L = log(1 + x)``, refined by
   two steps of the fourth-order iteration of Fritsch, Shafer and Crowley (1973):
   ``z = log(x / w) - w``, ``q = 2 (1 + w)(1 + w + 2z/3)``,
   ``w <- w (1 + z / (1 + w) * (q - z) / (q - 2z))``.

Domain: ``x < -1/e`` gives NaN, except within two units in the last place of ``-1/e`` in the input's
dtype (an input that is ``-1/e`` rounded to that dtype, such as ``float32(-1/e)`` or ``float16(-1/e)``,
which lie just below it), which gives ``-1``. ``W(+inf) = +inf``; NaN propagates.

Float32 and float64 are computed in their own precision; float16 and bfloat16 are computed in
float32 and rounded back. The derivative is ``dW/dx = W / (x (1 + W)) = exp(-W) / (1 + W)`` (1 at
``x = 0``, infinite at ``-1/e``), itself differentiable, so double backward works.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["lambertw"]

# Corless, Gonnet, Hare, Jeffrey, Knuth (1996), series of W0 about the branch point in
# p = sqrt(2 (e x + 1)), coefficients mu_k from their recurrence (exact fractions, evaluated here).
_BRANCH_SERIES = (
    -1.0, 1.0, -1 / 3, 11 / 72, -43 / 540, 769 / 17280, -221 / 8505, 680863 / 43545600,
    -1963 / 204120, 226287557 / 37623398400, -5776369 / 1515591000, 169709463197 / 69528040243200,
    -1118511313 / 709296588000, 667874164916771 / 650782456676352000,
)
_INV_E = 1.0 / math.e  # float64 1/e
_INV_E_LO64 = -1.2428753672788363e-17  # 1/e - float64(1/e), from a 50-digit value of 1/e
_INV_E_F32 = 0.3678794503211975  # float32(1/e) (exactly representable)
_INV_E_LO32 = -9.1497551881701012e-09  # 1/e - float32(1/e), from the same value


# Unit in the last place of 1/e in float16 (2^-12) and bfloat16 (2^-9): their inputs within two of
# them below -1/e are -1/e rounded to that dtype.
_HALF_ULP_INV_E = {torch.float16: 2.0 ** -12, torch.bfloat16: 2.0 ** -9}


def _split_inv_e(dtype: torch.dtype) -> tuple[float, float, float]:
    """(hi, lo, tolerance) with hi + lo = 1/e, hi exact in ``dtype``; tolerance = 2 ulp of 1/e."""
    if dtype == torch.float64:
        return _INV_E, _INV_E_LO64, 2 * 2.0 ** -54
    return _INV_E_F32, _INV_E_LO32, 2 * 2.0 ** -25


def _lambertw_forward(x: Tensor, iterations: int) -> Tensor:
    # In-place updates below act on fresh temporaries only (never on x): they save allocations.
    hi, lo, tol = _split_inv_e(x.dtype)
    # delta = x + 1/e, accurately: x + hi is exact near -1/e (Sterbenz), lo restores the rest.
    delta = (x + hi).add_(lo)
    p = torch.clamp(delta, min=0.0).mul_(2.0 * math.e).sqrt_()

    # float32 needs 10 terms where the series is used (p < 0.3: the next term is below 3e-8).
    series = _BRANCH_SERIES if x.dtype == torch.float64 else _BRANCH_SERIES[:10]
    branch = p * series[-1]
    for c in reversed(series[1:-1]):
        branch.add_(c).mul_(p)
    branch.add_(series[0])

    # Winitzki's approximation for x >= -0.25, the branch series below.
    L = torch.log1p(torch.clamp(x, min=-0.25))
    w = torch.log1p(L).div_(L + 2.0).neg_().add_(1.0).mul_(L)
    w = torch.where(x < -0.25, branch, w)
    for _ in range(iterations):
        z = torch.div(x, w).log_().sub_(w)
        w1 = w + 1.0
        q = (z * (2.0 / 3.0)).add_(w1).mul_(w1).mul_(2.0)
        step = (q - z).div_(q - 2.0 * z).mul_(z).div_(w1)
        w = step.add_(1.0).mul_(w)

    # Past p ~ 0.1 the series' truncation error grows (2.7e-11 at 0.3): enough for float32, whose
    # iteration loses ~ulp/p to the flatness of w exp(w) near the branch point.
    out = torch.where(p < (0.1 if x.dtype == torch.float64 else 0.3), branch, w)
    # Below |x| = 1e-4 the Taylor series W = x - x^2 + 3/2 x^3 - 8/3 x^4 + 125/24 x^5: its first two
    # terms are exact to 1.5e-8 relative (float32); float64 needs all five.
    if x.dtype == torch.float64:
        tiny = (x * (125.0 / 24.0)).add_(-8.0 / 3.0).mul_(x).add_(1.5).mul_(x).add_(-1.0).mul_(x).add_(1.0).mul_(x)
    else:
        tiny = x - x * x
    out = torch.where(x.abs() < 1e-4, tiny, out)
    out = torch.where(x == math.inf, x, out)
    # Within tol below -1/e, p = 0 and the branch series already gives -1 exactly. Further below,
    # and for NaN (all comparisons false), NaN.
    return torch.where(delta >= -tol, out, math.nan)


class _LambertW(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return _lambertw_forward(x, 2 if x.dtype == torch.float64 else 1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * torch.exp(-w) / (1.0 + w)


def lambertw(x: Tensor) -> Tensor:
    """Principal branch ``W0(x)`` of the Lambert W function, element-wise.

    ``w = lambertw(x)`` solves ``w * exp(w) = x`` with ``w >= -1``, for ``x >= -1/e``.

    Args:
        x: a floating-point tensor of any shape and device. float32 and float64 are computed in their
            own precision; float16 and bfloat16 in float32, rounded back.

    Returns:
        A tensor like ``x``. NaN where ``x < -1/e`` beyond rounding (within two units in the last
        place of ``-1/e`` the result is ``-1``), ``+inf`` at ``+inf``.

    Accuracy against a 50-digit reference (tests/test_lambertw.py): float64 within 1e-12 relative +
    1e-12 absolute on ``[-1/e, 1e300]``, float32 within 2e-6 relative + 1e-6 absolute on
    ``[-1/e, 3e38]``, subnormals included.

    Differentiable: ``dW/dx = W / (x (1 + W))``, equal to 1 at 0 and infinite at ``-1/e``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"lambertw: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"lambertw: x must be a floating-point tensor (float16/bfloat16/float32/float64), got dtype {x.dtype}")
    if x.dtype in _HALF_ULP_INV_E:
        # Computed in float32, but the domain's edge is the input dtype's: float16(-1/e) lies 4e-5
        # below -1/e, outside float32's tolerance, and is still "-1/e rounded", so it gives -1.
        xf = x.float()
        edge = -_INV_E - 2 * _HALF_ULP_INV_E[x.dtype]
        xf = torch.where(xf >= edge, torch.clamp(xf, min=-_INV_E_F32), xf)
        return _LambertW.apply(xf).to(x.dtype)
    return _LambertW.apply(x)
