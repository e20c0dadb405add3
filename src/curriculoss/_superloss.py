r"""SuperLoss's Eqs. 3-4 for a batch, and the autograd nodes of its gradient.

`elementwise` computes $SL$ (Eq. 3) and $\sigma^*$ (Eq. 4) through `w_plus_one`, the core of
`lambertw`; `superloss_forward` reduces them and returns the factor of the backward,
`grad -> factor * grad` ($\tau$ and $\sigma^*$ are constants, see `curriculoss.superloss`).
`SuperLossFunction` wraps them in one autograd node for the functional forms and the module's eager
step; `Precomputed` gives the output of the module's compiled step (`fused=True`) the same backward.
Everything here runs without autograd inside the nodes and without host synchronisation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from curriculoss._compile import call_compiled
from curriculoss._lambertw import half_delta_bounds, in_place, precision_of, start_scale, w_plus_one


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32 and the half types are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def elementwise(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float,
                    precision: torch.dtype, compiled: bool = False) -> tuple[Tensor, Tensor]:
    r"""Element-wise $SL$ (Eq. 3) at `loss` and $\sigma^*$ (Eq. 4) of `source` (`None`:
    of `loss` itself), both without autograd; `precision` is the accuracy contract of `W`.

    With $x = \beta/2$ and the cap $x \ge -1/e$ (the module docstring's erratum), `lambertw`'s
    internal variable $(x + 1/e)/2 = \beta/4 + 1/(2e)$ is formed directly and clamped at a tiny
    positive value, which is the cap ($W = -1$, $\sigma^* = e$); at
    $\beta = -2/e$ exactly the sum is exactly 0 (`0.5/e` rounds to half of the dtype's `1/e`).
    Then $u = -W = 1 - v$, $\sigma^* = e^{u}$ and $\lambda (\log\sigma^*)^2 = \lambda u^2$.
    """
    diff = loss - tau
    src = diff if source is None else source - tau
    # s (x + 1/e) / 2 with s = start_scale: one multiplication fewer in the start of W. The upper clamp
    # then stands for x = max / s instead of max, far beyond any loss (W there is still its own cap).
    s = start_scale(precision)
    low, high = half_delta_bounds(src.dtype)
    half_delta = src.mul(0.25 * s / lam).add_(0.5 * s / math.e).clamp_(low * s, high)
    inplace = in_place(compiled)
    u = torch.rsub(w_plus_one(half_delta, precision, compiled, scaled=True, inplace=inplace), 1.0)
    # In place where the buffers allow (on large tensors a new buffer costs more than the arithmetic):
    # sigma* over half_delta, SL over diff when its dtype is the result's.
    sigma = torch.exp(u, out=half_delta if inplace else None)
    sl = diff.mul_(sigma) if diff.dtype == sigma.dtype else diff * sigma
    return torch.addcmul(sl, u, u, value=lam, out=sl if inplace else None), sigma


def superloss_forward(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float, precision: torch.dtype,
                       reduction: str, keep: Tensor | None, out_dtype: torch.dtype,
                       compiled: bool = False, normalise: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """`_superloss_core` reduced: (output, sigma* in `out_dtype`, the factor of the backward
    `grad -> factor * grad`: sigma*, zero where ignored, divided by the count for 'mean').
    `normalise`: output and factor divided by the mean sigma* of the kept entries (`step='normalised'`)."""
    sl, sigma = elementwise(loss, source, tau, lam, precision, compiled)
    sigma = sigma if sigma.dtype == out_dtype else sigma.to(out_dtype)
    grad_sigma = sigma
    if keep is not None:
        sl = torch.where(keep, sl, 0.0)
        grad_sigma = torch.where(keep, sigma, 0.0)
    if normalise:
        return _normalised(sl, sigma, grad_sigma, keep, reduction, out_dtype)
    if reduction == "none":
        out = sl if sl.dtype == out_dtype else sl.to(out_dtype)
    elif reduction == "sum":
        out = sl.sum(dtype=out_dtype)
    elif keep is None:
        out = sl.mean(dtype=out_dtype)
        grad_sigma = sigma / max(sl.numel(), 1)  # in the fused kernel, this costs the backward nothing
    else:
        count = keep.sum().clamp_min(1)
        out = (sl.sum() / count).to(out_dtype)
        grad_sigma = grad_sigma / count
    return out, sigma, grad_sigma


def _normalised(sl: Tensor, sigma: Tensor, kept_sigma: Tensor, keep: Tensor | None, reduction: str,
                out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The normalised step: the reduction of `sl` and the backward factor divided by the kept
    entries' mean sigma*; for 'mean', sum(SL) / sum(sigma*) and sigma* / sum(sigma*). An entry kept
    has sigma* > 0, so the sum is 0 only when none is (clamped then: output and factor 0)."""
    total = kept_sigma.sum() if keep is None else kept_sigma.sum().clamp_min(torch.finfo(kept_sigma.dtype).tiny)
    if reduction == "mean":
        return sl.sum(dtype=out_dtype) / total, sigma, kept_sigma / total
    scale = (kept_sigma.numel() if keep is None else keep.sum()) / total
    out = sl.sum(dtype=out_dtype) * scale if reduction == "sum" else sl * scale
    return (out if out.dtype == out_dtype else out.to(out_dtype)), sigma, kept_sigma * scale


def forward(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float, precision: torch.dtype,
            reduction: str, keep: Tensor | None, out_dtype: torch.dtype, fused: bool,
            normalise: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`superloss_forward`, as one compiled graph when `fused` (compiled once per process for every
    batch size, `tau` and `lam`; inductor fuses it into one or two kernels) and a compiler works."""
    if fused:
        out = call_compiled(superloss_forward, True, loss.device.type, loss, source, tau, lam, precision, reduction,
                            keep, out_dtype, True, normalise)
        if out is not None:
            return out
    return superloss_forward(loss, source, tau, lam, precision, reduction, keep, out_dtype, normalise=normalise)


class SuperLossFunction(torch.autograd.Function):
    r"""(loss, source, tau, lam, reduction, keep, fused, normalise) -> (reduced SL, sigma* in loss's dtype).

    One autograd node: the backward is `grad * sigma*` ($\tau$ and $\sigma^*$ are constants, see the
    module docstring; divided by the count for 'mean'),
    so autograd records none of the forward's arithmetic. `keep` (bool, or `None`) zeroes ignored
    entries' output and gradient. The backward is itself differentiable: $\sigma^*$ is a
    constant, so $\partial^2 SL / \partial \ell^2 = 0$ and a double backward (e.g. a gradient
    penalty) sees the task loss's own second derivative weighed by $\sigma^*$.
    """

    @staticmethod
    def forward(ctx, loss, source, tau, lam, reduction, keep, fused, normalise):  # type: ignore[override]
        compute = compute_dtype(loss.dtype)
        x = loss if loss.dtype == compute else loss.to(compute)
        out, sigma, grad_sigma = forward(x, source, tau, lam, precision_of(loss.dtype), reduction, keep, loss.dtype,
                                          fused, normalise)
        ctx.save_for_backward(grad_sigma)
        ctx.mark_non_differentiable(sigma)
        ctx.set_materialize_grads(False)  # sigma's (absent) gradient: no zeros to allocate
        return out, sigma

    @staticmethod
    def backward(ctx, grad, _):  # type: ignore[override]
        (sigma,) = ctx.saved_tensors
        if grad is None:
            return (None,) * 8
        return sigma * grad, None, None, None, None, None, None, None


class Precomputed(torch.autograd.Function):
    """(loss, out, factor) -> `out`, with the backward `grad -> factor * grad`: the fused step
    computed both without autograd."""

    @staticmethod
    def forward(ctx, loss, out, factor):  # type: ignore[override]
        ctx.save_for_backward(factor)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (factor,) = ctx.saved_tensors
        return factor * grad, None, None
