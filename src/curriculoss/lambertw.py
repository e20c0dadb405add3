"""The principal branch W0 of the Lambert W function, tensor-native and differentiable.

`W(x)` is the solution `w >= -1` of `w * exp(w) = x`, defined for `x >= -1/e`. The SuperLoss
needs it for its closed-form confidence (Castells et al. 2020, Eq. 4); computing it with scipy on the
host would copy every batch's losses to the CPU and break `torch.compile`. `lambertw` evaluates it
with a short fixed sequence of element-wise tensor operations: no data-dependent control flow, no
host-device synchronisation, any device (`meta` included), any batch shape. At small batch sizes each
operation costs a few microseconds whatever its arithmetic, so the method is chosen for its operation
count: 29 in float32 and 37 in float64 (60 for the series-and-iteration method it replaced). On the CPU,
where torch's kernels that read or write bool masks are 2-4 times slower than a float addition, the
special values are handled with float arithmetic where a mask is not needed (step 3).

Method, per element. Everything is solved for `v = W + 1 >= 0` from `h = (x + 1/e) / 2` (formed as
`x/2 + c_hi/2 + c_lo/2` with `c_hi + c_lo = 1/e` split in the working precision, so that the
cancellation near `-1/e` costs nothing), because in `v` the equation `(v - 1) e^v = e x` stays
well conditioned right up to the branch point:

1. Start: `q = log1p(c sqrt(2 e (x + 1/e)))` and `v0 = a q - k q log1p(q) / (b + q)`.
   `sqrt(2 (e x + 1))` is the variable of the branch-point series (Corless et al. 1996, Eq. 4.22),
   in which `v = p - p^2/3 + ...`; the form also follows `W + 1 ~ 2 log p - log log p` for large
   `x`. The constants `a, b, c, k` are fitted per dtype (minimax of the error after step 2).
2. Halley's iteration on `f(v) = (v - 1) e^v - e x`, written with `em = expm1(v)` as
   `f = v + v em - em - 2 e h` and `f' = v (1 + em)`, `f''/f' = (v + 1)/v`, every term divided
   by `2e` so that nothing overflows below the largest float. Through `expm1` the rounding errors
   of `f` scale with `v`, so the step is accurate to a few units in the last place of `v` even
   next to the branch point (an iteration on `w e^w - x` loses `ulp / sqrt(x + 1/e)` there). One
   step in float32, two in float64 (cubic convergence).
3. `W = v - 1`. Where `|x| < 2^-24` (float32) or `2^-53` (float64), `W = x - x^2` rounds to
   `x`, which is returned, so subnormals come back exactly. Below the domain the clamped `h` is made
   negative (so that the start's square root gives NaN), and `+inf`, clamped to a finite value inside,
   is restored by a maximum with `x - max`.

The steps are written once, in `curriculoss._lambertw`, which SuperLoss's closed-form confidence
uses too; large CPU tensors are evaluated in cache-sized pieces.

Accuracy, measured against mpmath (50 digits) on the test grids and 700,000 random float32 values:
at most 0.2 of the float32 contract (2e-6 relative + 1e-6 absolute) and 0.06 of the float64 one
(1e-12 + 1e-12).

Domain: `x < -1/e` gives NaN, except within two units in the last place of `-1/e` in the input's
dtype (an input that is `-1/e` rounded to that dtype, such as `float32(-1/e)` or `float16(-1/e)`,
which lie just below it), which gives `-1`. `W(+inf) = +inf`; NaN propagates.

Float32 and float64 are computed in their own precision; float16 and bfloat16 are computed in
float32 and rounded back. The derivative is `dW/dx = W / (x (1 + W)) = exp(-W) / (1 + W)` (1 at
`x = 0`, infinite at `-1/e`), itself differentiable, so double backward works.

`fused=True` evaluates the same operations as one compiled kernel (`torch.compile`, see
`lambertw`); the result equals the eager one within the accuracy contract.
"""
from __future__ import annotations

import torch
from torch import Tensor

from curriculoss.checks import check_floating_tensor
from curriculoss._lambertw import HALF_ULP_INV_E, INV_E, INV_E_F32, evaluate

__all__ = ["lambertw"]


class _LambertW(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, fused: bool) -> Tensor:  # type: ignore[override]
        return evaluate(x, fused)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * torch.exp(-w) / (1.0 + w), None


def lambertw(x: Tensor, *, fused: bool = False) -> Tensor:
    """Principal branch `W0(x)` of the Lambert W function, element-wise.

    `w = lambertw(x)` solves `w * exp(w) = x` with `w >= -1`, for `x >= -1/e`.

    Args:
        x: a floating-point tensor of any shape and device. float32 and float64 are computed in their
            own precision; float16 and bfloat16 in float32, rounded back.
        fused: evaluate the element-wise sequence as one `torch.compile`'d kernel (compiled on the
            first call, about a minute on a small CPU, then cached for every shape; needs a working
            compiler, otherwise the eager code runs). Worth it for large tensors and on GPUs; the
            results equal the eager ones within the accuracy below.

    Returns:
        A tensor like `x`. NaN where `x < -1/e` beyond rounding (within two units in the last
        place of `-1/e` the result is `-1`), `+inf` at `+inf`.

    Accuracy against a 50-digit reference (tests/test_lambertw.py): float64 within 1e-12 relative +
    1e-12 absolute on `[-1/e, 1e300]`, float32 within 2e-6 relative + 1e-6 absolute on
    `[-1/e, 3e38]`, subnormals included.

    Differentiable: `dW/dx = W / (x (1 + W))`, equal to 1 at 0 and infinite at `-1/e`.
    """
    check_floating_tensor("lambertw: x", x, dtype_hint=" (float16/bfloat16/float32/float64)")
    if x.dtype in HALF_ULP_INV_E:
        # Computed in float32, but the domain's edge is the input dtype's: float16(-1/e) lies 4e-5
        # below -1/e, outside float32's tolerance, and is still "-1/e rounded", so it gives -1.
        xf = x.float()
        edge = -INV_E - 2 * HALF_ULP_INV_E[x.dtype]
        xf = torch.where(xf >= edge, torch.clamp(xf, min=-INV_E_F32), xf)
        return _apply(xf, fused).to(x.dtype)
    return _apply(x, fused)


def _apply(x: Tensor, fused: bool) -> Tensor:
    """Through the autograd node only when a gradient is wanted (the node's own cost is about 30 us)."""
    if x.requires_grad and torch.is_grad_enabled():
        return _LambertW.apply(x, fused)
    return evaluate(x, fused)
