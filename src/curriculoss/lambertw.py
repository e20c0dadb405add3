"""The principal branch W0 of the Lambert W function, tensor-native and differentiable.

`W(x)` is the solution `w >= -1` of `w * exp(w) = x`, defined for `x >= -1/e`. The SuperLoss
needs it for its closed-form confidence (Castells et al. 2020, Eq. 4); computing it with scipy on the
host would copy every batch's losses to the CPU and break `torch.compile`. `lambertw` evaluates it
with a short fixed sequence of element-wise tensor operations (a start fitted per dtype, then Halley
steps on `v = W + 1`; the method is described in `curriculoss._lambertw`): no data-dependent control
flow, no host-device synchronisation, any device (`meta` included), any batch shape.

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

from curriculoss._checks import check_floating_tensor
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
