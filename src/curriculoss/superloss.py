r"""SuperLoss (Castells, Weinzaepfel and Revaud, NeurIPS 2020), Eqs. 1-4.

Put on top of any per-sample task loss $\ell_i$, the SuperLoss weighs each sample by a confidence
$\sigma_i$ that minimises

$$
L_\lambda(\ell_i, \sigma_i) = (\ell_i - \tau)\,\sigma_i + \lambda (\log \sigma_i)^2    \qquad (1)
$$

in closed form through the principal branch of the Lambert W function:

$$
\sigma^*_\lambda(\ell_i) = e^{-W(\frac12 \max(-\frac2e,\ \beta_i))},
\quad \beta_i = \frac{\ell_i - \tau}{\lambda}                                          \qquad (4)
$$

and $SL_\lambda(\ell_i) = L_\lambda(\ell_i, \sigma^*_\lambda(\ell_i))$ (Eq. 3). The cap is
$-2/e$, not the $-2/\lambda$ of the paper's transcription (an erratum of that transcription): below it
the minimum is unbounded and the cap gives $\sigma^* = e$, the largest confidence SuperLoss ever
assigns. $\tau$ and $\sigma^*$ are computed from the detached loss and treated as constants, so
$\partial SL / \partial \ell_i = \sigma^*_i$ (a clarification of the paper's transcription). Since
$\log \sigma^* = -W$, the regulariser is $\lambda W^2$.

Cost: at the batch sizes of a training step, the number of operations dispatched is the cost, so the
module folds its work into few of them (one autograd node whose backward is `grad * sigma*`, Lambert W
solved in place, the state updated with single operations): 52 top-level torch operations for
`SuperLoss(tau='avg', num_samples=N)` on a cross-entropy, forward and backward, the cross-entropy's 5
and the index check's 2 included. On the CPU, batches below 8,192 entries (`lambertw`'s
`_NUMPY_BELOW`; batches of every size when torch runs on one thread) take a NumPy copy of the same
steps on views of the same memory, at about a fifth of torch's dispatch cost per operation (22 torch
operations left, most of them the views' metadata, and three native autograd operations in place of
the Python node: see `_with_gradient`);
`tests/test_speed.py` keeps both budgets and every SuperLoss test runs on both evaluations.
`fused=True` runs the whole step as one `torch.compile`'d kernel.

Everything here is tensor-native: no host synchronisation, so it runs on CUDA, on `meta` tensors
and under `torch.compile(fullgraph=True)`. The only exception is `SuperLoss` under
`torch.distributed` with more than one process, which exchanges its batch statistics between the
ranks (see its docstring); outside a process group it makes no collective call.
"""
from __future__ import annotations

import functools
import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor, nn

from curriculoss.distributed import all_gather_cat, all_reduce_sum, is_distributed
from curriculoss.lambertw import (_half_delta_bounds, _in_place, _numpy_ok, _precision, _start_scale, _w_plus_one,
                                  _w_plus_one_numpy)

__all__ = ["superloss_confidence", "superloss", "SuperLoss", "STEPS"]

_REDUCTIONS = ("none", "mean", "sum")
#: The batch objectives: the batch's SL divided by its mean sigma* (default), or Eq. 3 as written.
STEPS = ("normalised", "paper")
# Computed in float32 and returned in their own dtype: in float16/bfloat16 the cap -2/e / 2 rounds to
# a value off -1/e by more than lambertw's float32 tolerance (NaN in float16, sigma* = 2.56 in bfloat16).
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# float64 losses larger than this in magnitude are treated like infinite ones by the module's state: the
# running sums (float64) would overflow to inf after a few of them (the largest float64 is 1.8e308), and
# the threshold then turns inf and NaN for good. 1e290 leaves room for 1e18 such losses in a sum;
# float32 losses (< 3.4e38) cannot come near it. With float32 state (``.float()``, for devices without
# float64 such as Apple's MPS) the same holds for losses above 1e30 (room for 3e8 of them).
_MAX_LOSS = {torch.float64: 1e290, torch.float32: 1e30}


def _check_lam(lam: float) -> None:
    if isinstance(lam, bool) or not isinstance(lam, Real) or not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")


def _check_tau(tau: Tensor | float) -> None:
    """The functional forms' threshold: a finite number or a floating tensor (values not read: no sync)."""
    if isinstance(tau, Tensor):
        if not tau.is_floating_point():
            raise TypeError(f"tau must be a finite number or a floating-point tensor, got dtype {tau.dtype}")
    elif isinstance(tau, bool) or not isinstance(tau, Real) or not math.isfinite(tau):
        hint = " (running thresholds belong to the SuperLoss module)" if isinstance(tau, str) else ""
        raise ValueError(f"tau must be a finite number or a floating-point tensor, got {tau!r}{hint}")


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}, got {step!r}")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_loss(loss: Tensor) -> None:
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss must be a torch.Tensor of per-sample losses, got {type(loss).__name__}")
    if not loss.is_floating_point():
        raise TypeError(f"loss must be a floating-point tensor, got dtype {loss.dtype}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32 and the half types are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _superloss_core(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float,
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
    # s (x + 1/e) / 2 with s = _start_scale: one multiplication fewer in the start of W. The upper clamp
    # then stands for x = max / s instead of max, far beyond any loss (W there is still its own cap).
    s = _start_scale(precision)
    low, high = _half_delta_bounds(src.dtype)
    half_delta = src.mul(0.25 * s / lam).add_(0.5 * s / math.e).clamp_(low * s, high)
    inplace = _in_place(compiled)
    u = torch.rsub(_w_plus_one(half_delta, precision, compiled, scaled=True, inplace=inplace), 1.0)
    # In place where the buffers allow (on large tensors a new buffer costs more than the arithmetic):
    # sigma* over half_delta, SL over diff when its dtype is the result's.
    sigma = torch.exp(u, out=half_delta if inplace else None)
    sl = diff.mul_(sigma) if diff.dtype == sigma.dtype else diff * sigma
    return torch.addcmul(sl, u, u, value=lam, out=sl if inplace else None), sigma


def _superloss_forward(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float, precision: torch.dtype,
                       reduction: str, keep: Tensor | None, out_dtype: torch.dtype,
                       compiled: bool = False, normalise: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """`_superloss_core` reduced: (output, sigma* in `out_dtype`, the factor of the backward
    `grad -> factor * grad`: sigma*, zero where ignored, divided by the count for 'mean').
    `normalise`: output and factor divided by the mean sigma* of the kept entries (`step='normalised'`)."""
    sl, sigma = _superloss_core(loss, source, tau, lam, precision, compiled)
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


def _superloss_numpy_constants(dtype: np.dtype, precision: torch.dtype, lam: float) -> tuple[np.ndarray, ...]:
    """`_superloss_forward_numpy`'s constants as 0-d arrays of `dtype` (NumPy's arithmetic with
    them costs about half of that with Python floats)."""
    s = _start_scale(precision)
    low, high = _half_delta_bounds(torch.float64 if dtype == np.float64 else torch.float32)
    return tuple(np.array(v, dtype=dtype) for v in (0.25 * s / lam, 0.5 * s / math.e, low * s, high, 1.0, lam))


def _superloss_forward_numpy(x: np.ndarray, source: np.ndarray | None, tau: np.ndarray | float, lam: float,
                             precision: torch.dtype, reduction: str, keep: np.ndarray | None,
                             out_dtype: torch.dtype, normalise: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_superloss_forward` in NumPy, step for step, on 1-D arrays (NumPy turns 0-d results into
    scalars): (output, sigma*, backward factor), the latter two 1-D. Used for small CPU tensors (see
    `_numpy_views`), where torch's 2-6 us of dispatch per operation is the whole cost."""
    out_np = _NP_DTYPE[out_dtype]
    with np.errstate(all="ignore"):  # NaN and inf losses flow through as in torch
        diff = x - tau
        src = diff if source is None else source - tau
        slope, offset, low, high, one, lam_c = _superloss_numpy_constants(src.dtype, precision, lam)
        half_delta = src * slope
        half_delta += offset
        np.minimum(np.maximum(half_delta, low, out=half_delta), high, out=half_delta)
        u = _w_plus_one_numpy(half_delta, precision, scaled=True)
        np.subtract(one, u, out=u)
        sigma = np.exp(u)
        sl = diff * sigma
        sigma = sigma.astype(out_np, copy=False)
        u *= u
        u *= lam_c
        sl += u
        factor = sigma
        if keep is not None:
            sl = np.where(keep, sl, sl.dtype.type(0.0))
            factor = np.where(keep, sigma, out_np(0.0))
        count = sl.size if keep is None else np.count_nonzero(keep)
        scale = out_np(count) / max(factor.sum(), np.finfo(out_np).tiny) if normalise else None
        if reduction == "none":
            out = sl.astype(out_np, copy=False)
        elif reduction == "sum":
            out = np.array(sl.sum(dtype=out_np))
        else:
            if keep is None:  # torch's mean: in the output dtype
                out = np.array(sl.astype(out_np, copy=False).sum(dtype=out_np) / out_np(count) if count else np.nan,
                               dtype=out_np)
            else:
                out = np.array(sl.sum() / max(count, 1), dtype=out_np)
            factor = factor / out_np(max(count, 1))
        if scale is not None:
            out, factor = np.asarray(out * scale, dtype=out_np), factor * scale
        return out, sigma, factor


def _numpy_views(*tensors: Tensor | None) -> list[np.ndarray | None] | None:
    """1-D NumPy views of these CPU tensors (detached, no copy), or `None` when one cannot be viewed
    (e.g. a tensor of torch.func's transforms): the caller then runs torch's code."""
    try:  # CPU memory only (callers check _numpy_ok): a view, no copy and no device to wait for
        return [None if t is None else (t.detach() if t.requires_grad else t).numpy().reshape(-1) for t in tensors]
    except (RuntimeError, TypeError):
        return None


def _compile(fn, dynamic: bool):
    """`fn` compiled as one graph; `None` when `torch.compile` is unavailable.

    `dynamic=True` makes sizes and Python floats symbolic: a functional call's `tau` and `lam`
    may change from call to call without recompiling, but every float constant of the arithmetic then
    becomes a tensor argument made anew on each call (three operations apiece). The module's step, whose
    floats are fixed, is compiled with `dynamic=False` and its sizes marked dynamic per call
    (`_dynamic`), so a new batch size still reuses the graph."""
    try:
        return torch.compile(fn, dynamic=dynamic, fullgraph=True)
    except Exception:  # pragma: no cover - no compiler on this platform
        return None


def _dynamic(*tensors: Tensor | None) -> None:
    """Mark every dimension of these tensors dynamic for the compiled graphs (no recompilation per size)."""
    for t in tensors:
        if t is not None:
            for d in range(t.dim()):
                torch._dynamo.maybe_mark_dynamic(t, d)


@functools.lru_cache(maxsize=None)
def _compiled_forward():
    """`_superloss_forward` as one compiled graph (inductor fuses it into one or two kernels),
    compiled once per process for every batch size, `tau` and `lam`."""
    return _compile(_superloss_forward, dynamic=True)


@functools.lru_cache(maxsize=None)
def _compiled_step():
    """`_fused_step`, the module's whole forward (state updates included), as one compiled graph."""
    return _compile(_fused_step, dynamic=False)


_FUSED_BROKEN: set[str] = set()


def _forward(loss: Tensor, source: Tensor | None, tau: Tensor | float, lam: float, precision: torch.dtype,
             reduction: str, keep: Tensor | None, out_dtype: torch.dtype, fused: bool,
             normalise: bool) -> tuple[Tensor, Tensor, Tensor]:
    if fused and loss.device.type not in _FUSED_BROKEN and not torch.compiler.is_compiling():
        fn = _compiled_forward()
        if fn is not None:
            try:
                return fn(loss, source, tau, lam, precision, reduction, keep, out_dtype, True, normalise)
            except Exception:  # no working compiler at run time (e.g. no C++ toolchain): stay eager
                _FUSED_BROKEN.add(loss.device.type)
    tau_t = tau if isinstance(tau, Tensor) else None
    if _numpy_ok(loss, source, tau_t, keep) and (tau_t is None or (tau_t.numel() == 1 and tau_t.dim() <= loss.dim())):
        views = _numpy_views(loss, source, tau_t, keep)
        if views is not None:
            x, src, t, kp = views
            if t is None:
                t = tau
            elif tau_t.dim() == 0 < loss.dim():  # torch: a 0-d tensor does not promote the loss's dtype
                t = t.astype(x.dtype if src is None else src.dtype, copy=False)
            out, sigma, factor = _superloss_forward_numpy(x, src, t, lam, precision, reduction, kp, out_dtype,
                                                          normalise)
            return (torch.from_numpy(out.reshape(loss.shape) if reduction == "none" else out),
                    torch.from_numpy(sigma.reshape(loss.shape)), torch.from_numpy(factor.reshape(loss.shape)))
    return _superloss_forward(loss, source, tau, lam, precision, reduction, keep, out_dtype, normalise=normalise)


def _check_index_values(index: Tensor, num_samples: int, both_ends: bool = False) -> None:
    """Indices in [0, num_samples), checked on CPU in eager mode only: a negative index would otherwise
    wrap around silently (-1 is sample N-1). Elsewhere the check would synchronise with the device (or
    cannot run, under torch.compile and on meta), so it is skipped there and too large indices are left
    to the indexing kernel, as in torch's own indexing; negative ones are then not detected."""
    if index.device.type != "cpu" or index.numel() == 0 or torch.compiler.is_compiling():
        return
    # Eager: only the minimum is read on every step (two operations): an index too large fails in the
    # gather that comes before any write. The fused step gathers and writes in one kernel, so there
    # (``both_ends``) the maximum is checked too. The message's range is computed on the error path.
    if both_ends:
        lo, hi = (int(v) for v in torch.aminmax(index))
        bad = lo < 0 or hi >= num_samples
    else:
        bad = int(index.min()) < 0
    if bad:
        lo, hi = (int(v) for v in torch.aminmax(index))
        raise IndexError(_index_message(num_samples, lo, hi))


def _index_message(num_samples: int, lo: int, hi: int) -> str:
    return f"index must hold dataset indices in [0, {num_samples - 1}] (num_samples={num_samples}), got values in [{lo}, {hi}]"


def superloss_confidence(loss: Tensor, tau: Tensor | float, lam: float = 1.0) -> Tensor:
    r"""Optimal confidence $\sigma^*_\lambda(\ell)$ of Eq. 4, elementwise, detached.

    Args:
        loss: per-sample input losses, any shape, floating point.
        tau: threshold, a number or a tensor broadcastable to `loss`.
        lam: regularisation $\lambda > 0$ (the paper uses 1 for 10 classes, 0.25 for 100).

    Returns:
        $\sigma^*$ in $(0, e]$, same shape as `loss` (NaN where `loss` is NaN).
        $\sigma^* > 1$ for easy samples ($\ell < \tau$), $< 1$ for hard ones.
    """
    _check_loss(loss)
    _check_lam(lam)
    _check_tau(tau)
    if loss.dtype in _LOW_PRECISION:
        return superloss_confidence(loss.float(), tau, lam).to(loss.dtype)
    with torch.no_grad():
        x = loss.to(_compute_dtype(loss.dtype))
        _, sigma = _superloss_core(x, None, tau, lam, _precision(loss.dtype))
    return sigma.to(loss.dtype)


class _SuperLossFunction(torch.autograd.Function):
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
        compute = _compute_dtype(loss.dtype)
        x = loss if loss.dtype == compute else loss.to(compute)
        out, sigma, grad_sigma = _forward(x, source, tau, lam, _precision(loss.dtype), reduction, keep, loss.dtype,
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


def superloss(loss: Tensor, tau: Tensor | float, lam: float = 1.0, reduction: str = "mean", *,
              step: str = "normalised", fused: bool = False) -> Tensor:
    r"""SuperLoss of Eq. 3 with a given threshold:
    $SL_\lambda(\ell_i) = (\ell_i - \tau)\sigma^*_i + \lambda (\log \sigma^*_i)^2$.

    $\tau$ and $\sigma^*$ are constants for autograd:
    $\partial SL/\partial\ell_i = \sigma^*_i$, for second derivatives too (a double backward, e.g. a gradient penalty, works, as with
    the `SuperLoss` module).

    Args:
        loss: per-sample input losses (`reduction='none'` output of the task loss), any shape.
        tau: threshold, a number (e.g. $\log C$ for classification, Sec. 2.4; 0.5 for digit
            regression, Sec. 3.2) or a tensor broadcastable to `loss`.
        lam: regularisation $\lambda > 0$.
        reduction: `'none'` | `'mean'` | `'sum'`.
        step: `'normalised'` (default) divides the output by the batch's mean $\sigma^*$, a
            detached constant, so the gradient w.r.t. $\ell_i$ is
            $\sigma^*_i / \sum_j \sigma^*_j$ for `'mean'`; `'paper'` is Eq. 3 as written.
            See [`SuperLoss`][curriculoss.SuperLoss] for why the default differs from the paper.
        fused: compute the element-wise part as one `torch.compile`'d kernel (compiled once per
            process, dynamic batch sizes; eager code when no compiler works).

    Shape:
        loss: any shape; output: same shape for `'none'`, scalar otherwise.

    Examples:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target = torch.randint(10, (8,))
        >>> ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        >>> superloss(ce, tau=math.log(10), lam=1.0).backward()
    """
    _check_loss(loss)
    _check_lam(lam)
    _check_tau(tau)
    _check_reduction(reduction)
    _check_step(step)
    if loss.dtype in _LOW_PRECISION:
        return superloss(loss.float(), tau, lam, reduction, step=step, fused=fused).to(loss.dtype)
    if isinstance(tau, Tensor):
        tau = tau.detach().to(_compute_dtype(loss.dtype))
    out, _ = _SuperLossFunction.apply(loss, None, tau, float(lam), reduction, None, bool(fused), step == "normalised")
    return out


# ------------------------------------------------------------------------------------------------------
# The module's state update, as functions of its buffers: the eager path and the fused step share them.


def _valid(loss: Tensor, keep: Tensor | None, state: torch.dtype) -> Tensor:
    """Entries that may change the state: finite, not ignored, and not so large that the running sums
    of dtype `state` could overflow (see `_MAX_LOSS`)."""
    valid = torch.isfinite(loss) if keep is None else torch.isfinite(loss) & keep
    if loss.dtype == torch.float64 or state == torch.float32:
        valid = valid & (loss.abs() <= _MAX_LOSS[state])
    return valid


def _smoothed(loss: Tensor, index: Tensor, valid: Tensor, smoothed: Tensor, seen_buf: Tensor,
              smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """(source, stored, seen): the smoothed losses the confidence comes from, the values to store, and
    which entries had been seen. Gathers only: an out-of-range index fails with the state untouched."""
    previous = smoothed[index]
    seen = seen_buf[index]
    raw = loss.to(smoothed.dtype)
    # a' previous + (1 - a') loss; the first value seen initialises. Invalid entries keep their stored
    # value, but their confidence comes from their own loss (a huge float64 loss weighed by its tiny
    # sigma* keeps the output finite).
    source = torch.where(seen, torch.lerp(raw, previous, smoothing), raw)
    return source, torch.where(valid, source, previous), seen


def _next_tau(mode: str, momentum: float, source: Tensor, valid: Tensor, loss_sum: Tensor, count: Tensor,
              tau: Tensor, reduce: bool = False) -> Tensor:
    """Update the running threshold (`tau`, in place) with this batch's valid `source` values and
    return it; `reduce`: sum the batch's (sum, count) over the process group first."""
    if mode == "fixed":
        return tau
    state = loss_sum.dtype
    batch_sum = torch.where(valid, source, 0.0).sum(dtype=state)
    batch_count = valid.sum()
    if reduce:  # the global batch's sum and count, summed over the ranks
        batch_sum, batch_count = all_reduce_sum(torch.stack([batch_sum, batch_count.to(state)])).unbind()
    if mode == "avg":
        # tau = sum / count stays as it was when the batch brings nothing (and 0 before any data).
        loss_sum += batch_sum
        count += batch_count
        return torch.div(loss_sum, count.clamp_min(1.0), out=tau)
    has_data = batch_count > 0
    batch_mean = batch_sum / batch_count.clamp_min(1)
    new_tau = torch.where(count > 0, momentum * tau + (1.0 - momentum) * batch_mean, batch_mean)
    count += batch_count
    tau.copy_(torch.where(has_data, new_tau, tau))
    return tau


def _tau_for(loss: Tensor, index: Tensor | None, tau: Tensor) -> Tensor:
    """The threshold as the element-wise part takes it: 0-d for a 0-d loss, and in the loss's precision
    when there is no (float64) smoothed source."""
    if loss.dim() == 0:
        tau = tau.reshape(())
    if index is None and tau.dtype != _compute_dtype(loss.dtype):
        tau = tau.to(_compute_dtype(loss.dtype))
    return tau


def _local_state(loss: Tensor, index: Tensor | None, keep: Tensor | None, smoothed: Tensor | None,
                 seen: Tensor | None, loss_sum: Tensor, count: Tensor, tau: Tensor, mode: str, momentum: float,
                 smoothing: float) -> tuple[Tensor | None, Tensor]:
    """One process's state update (no collective): the buffers change in place; returns (source: the
    smoothed losses, or `None` without smoothing; the threshold to use)."""
    valid = _valid(loss, keep, loss_sum.dtype)
    source = None
    if index is not None:
        source, stored, was_seen = _smoothed(loss, index, valid, smoothed, seen, smoothing)
    tau = _next_tau(mode, momentum, loss if source is None else source, valid, loss_sum, count, tau)
    if index is not None:
        smoothed.index_put_((index,), stored)
        seen.index_put_((index,), was_seen | valid)
    return source, _tau_for(loss, index, tau)


def _fused_step(loss, index, keep, smoothed, seen, loss_sum, count, tau, mode, momentum, smoothing, lam, precision,
                reduction, out_dtype, normalise):
    """The module's whole forward without autograd, for `fused=True`: the state update and Eqs. 3-4.
    Compiled, it is one kernel on the CPU (state gathers and scatters included)."""
    source, tau = _local_state(loss, index, keep, smoothed, seen, loss_sum, count, tau, mode, momentum, smoothing)
    out, sigma, factor = _superloss_forward(loss, source, tau, lam, precision, reduction, keep, out_dtype, True,
                                            normalise)
    return out, sigma, factor, source, tau


_NP_DTYPE = {torch.float64: np.float64, torch.float32: np.float32}  # the dtypes computed in
_UNSIGNED = {np.dtype(np.int64): np.uint64, np.dtype(np.int32): np.uint32}  # index views for the range check


def _local_state_numpy(x: np.ndarray, index: np.ndarray | None, keep: np.ndarray | None,
                       smoothed: np.ndarray | None, seen: np.ndarray | None, loss_sum: np.ndarray,
                       count: np.ndarray, tau: np.ndarray, mode: str, momentum: float,
                       smoothing: float) -> np.ndarray | None:
    """`_local_state` in NumPy on views of the buffers (1-D `x`, `index`, `keep`); updates
    them in place and returns the smoothed source (`None` without smoothing). Gathers come first, so
    an out-of-range index fails with the state untouched."""
    if mode == "fixed" and index is None:
        return None  # nothing to update
    state = loss_sum.dtype.type
    valid = np.isfinite(x)
    if keep is not None:
        valid &= keep
    if x.dtype == np.float64 or state is np.float32:
        valid &= np.abs(x) <= state(_MAX_LOSS[torch.float64 if state is np.float64 else torch.float32])
    source = x
    if index is not None:
        previous = smoothed[index]
        was_seen = seen[index]
        raw = x.astype(state, copy=False)
        # torch.lerp(raw, previous, w), computed as torch computes it (from the nearer end)
        lerp = previous - (previous - raw) * state(1.0 - smoothing) if smoothing >= 0.5 else \
            raw + (previous - raw) * state(smoothing)
        source = np.where(was_seen, lerp, raw)
        stored = np.where(valid, source, previous)
    if mode != "fixed":
        batch_sum = np.where(valid, source, state(0.0)).sum(dtype=state)
        batch_count = state(np.count_nonzero(valid))
        if mode == "avg":
            loss_sum += batch_sum
            count += batch_count
            np.divide(loss_sum, np.maximum(count, state(1.0)), out=tau)
        else:
            batch_mean = batch_sum / max(batch_count, state(1.0))
            new_tau = np.where(count > 0, state(momentum) * tau + state(1.0 - momentum) * batch_mean, batch_mean)
            np.copyto(tau, new_tau, where=batch_count > 0)
            count += batch_count
    if index is not None:
        smoothed[index] = stored
        seen[index] = was_seen | valid
        return source
    return None


class _Precomputed(torch.autograd.Function):
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


def _with_gradient(loss: Tensor, detached: Tensor, out: Tensor, factor: Tensor, finite: bool) -> Tensor:
    """`out` (computed without autograd) made differentiable w.r.t. `loss` with the gradient
    `factor * grad` (`detached`: `loss.detach()`).

    `finite`: every entry of `out` is finite and none is ignored, which holds only if every loss is
    finite (an infinite or NaN loss gives an infinite or NaN `SL`). Then torch's own operations do it,
    `out + (loss - detached) * factor` (summed for a scalar `out`), whose added term is exactly 0:
    three native autograd operations cost less than one Python node (6 us of 190 for CE + SuperLoss
    forward + backward at batch 128; in a LeNet-5 step about 0.2 %, within what
    `benchmarks/bench_step.py` resolves). Otherwise the Python node `_Precomputed`, which
    keeps an infinite entry infinite and an ignored one 0 whatever its loss."""
    if not (loss.requires_grad and torch.is_grad_enabled()):
        return out
    if not finite:
        return _Precomputed.apply(loss, out, factor)
    delta = loss - detached
    if out.dim() == 0:
        if delta.dim() != 1:
            delta, factor = delta.reshape(-1), factor.reshape(-1)
        return torch.dot(delta, factor).add_(out)
    return torch.addcmul(out, delta, factor)


class SuperLoss(nn.Module):
    r"""SuperLoss with a running threshold and optional per-sample loss smoothing (Sec. 3.1).

    `forward(loss, index=None, mask=None)` takes per-sample losses of any shape and returns
    $SL_\lambda$ (Eq. 3) reduced by `reduction`.

    **Threshold** `tau`:

    * `'avg'`: the global average of every input loss seen so far ("Avg" in the paper);
    * `'ema'`: an exponential running average of the batch means,
      $\tau \leftarrow m\,\tau + (1-m)\,\bar\ell_{batch}$ with `momentum` $m = 0.9$,
      the paper's $\alpha$ ("ExpAvg"); the first batch sets $\tau = \bar\ell_{batch}$;
    * a number: a fixed threshold, e.g. $\log C$ for classification (Sec. 2.4) or 0.5 for
      digit regression (Sec. 3.2).

    The running thresholds are updated with this batch's losses *before* they are used, so the
    first batch is weighed against its own mean. The losses averaged are the ones the confidence
    is computed from (the smoothed ones when smoothing is on).

    **Smoothing** (when `num_samples` is given): each sample's loss is smoothed over the epochs by an
    exponential average with $\alpha' =$ `smoothing` (0.9 in the paper, after SELF),
    $\tilde\ell_i \leftarrow \alpha'\tilde\ell_i + (1-\alpha')\ell_i$, initialised with the first
    loss seen; `forward` must then get each sample's dataset `index`, in `[0, num_samples)`
    (checked on CPU tensors in eager mode; on accelerators the check would synchronise with the host,
    so it is skipped and, as in tensor indexing, a negative index there counts from the end). The
    confidence comes from $\tilde\ell_i$; the gradient still flows through the raw loss
    ($\partial SL/\partial\ell_i = \sigma^*(\tilde\ell_i)$). Leave `num_samples=None` for
    unbounded sample sets (detection anchors, metric-learning pairs), as the paper does. When an index
    appears twice in one batch, both entries read the previous smoothed value and one of them is stored.

    **Step** (`step`): the paper's batch mean of $SL$ (`step='paper'`) has gradient
    $\sigma^*_i / B$ w.r.t. $\ell_i$, and $\sigma^*_i$ reaches $e$ for every
    sample below $\tau - 2\lambda/e$. Early in training, while `'avg'` trails the falling
    losses, half or more of a batch sits there and the step is about twice the base loss's at the same
    learning rate: LeNet-5 on 10,000 MNIST images, SGD lr 0.1, momentum 0.9, batch 64, died (test
    accuracy 9.6-11.4 % after 2 epochs in 3 of 3 seeds) where plain cross-entropy trained (85-88 %).
    The default, `step='normalised'`, divides the batch's output by its mean $\sigma^*$ (a
    detached constant, like $\sigma^*$ itself; over the kept entries of the *global* batch under
    `torch.distributed` with `sync`): the same relative weights (Eq. 4), and the step of a weighted
    mean of the base loss's per-sample gradients, $\sum_i w_i \nabla\ell_i$ with
    $w_i = \sigma^*_i / \sum_j \sigma^*_j$, never larger in scale than the base loss's. The
    same runs then reached 84.8-94.1 %. The paper trains SuperLoss with its baseline's
    hyper-parameters; the normalised step keeps that learning rate meaning the same thing. For
    `reduction='none'` every entry is divided by the same constant, so a later `.mean()` gives the
    normalised step.

    **Training and evaluation**, as `nn.BatchNorm`'s running statistics: in `train()` mode (the
    default) `forward` updates the threshold, counts and smoothing buffers, also under
    `torch.no_grad()`; in `eval()` mode it computes with the current state and changes nothing,
    makes no collective call and needs no `index` (without one, the confidence comes from the loss
    itself; with one, from the stored smoothed loss blended with it, as a training step would). A
    validation step may therefore call the criterion as the training step does.

    **Mask.** `mask`: a boolean tensor shaped like `loss` where `True` marks entries to **ignore** (e.g.
    anchors assigned to neither foreground nor background). Ignored entries return 0, are left out of
    the mean and update no state. Entries whose loss is NaN or infinite never change the threshold,
    the counts or the smoothing buffers (their own output may be NaN, as in PyTorch's losses); nor do
    float64 losses beyond `1e290` in magnitude, which would overflow the float64 running sums.

    **dtypes**: float16 and bfloat16 losses are computed in float32 and the output and `.confidence`
    returned in the loss's dtype (in half precision the cap of Eq. 4 does not land on `-1/e`); the
    state stays float64. On a device without float64 (Apple's MPS) call `.float()` first: the state
    is then float32 and no float64 tensor is made; the `'avg'` threshold's running sum then carries
    float32's 7 digits (over 10^7 losses its rounding reaches about 1e-3 relative), and under
    distributed training with smoothing `num_samples` must stay below `2**24`.

    **State**: the threshold, the running sums and counts (float64) and the smoothing buffers are
    registered buffers: they follow `.to()`, are saved by `state_dict` and restore bit-exactly.
    After each forward, `.confidence` holds the batch's $\sigma^*$ (detached, shaped like
    `loss`) and `.tau` the threshold used (a one-element float64 tensor: `float(module.tau)`), and
    `.at_cap` marks (bool, shaped like `loss`) the entries whose $\beta$ is at or below the
    cap $-2/e$, i.e. $\sigma^* = e$, the largest confidence (`False` for ignored entries).

    **Distributed training** (`torch.distributed`, any backend): when `sync=True` (default) and a
    process group with more than one process is initialised at the time of `forward`, the state is
    kept identical on every rank and equal to that of one process fed the *global* batch (the
    concatenation of the ranks' batches in rank order), to float tolerance:

    * running threshold without smoothing (`'avg'`, `'ema'`): one `all_reduce` of the batch's
      (sum, count) of valid losses (16 bytes), so `tau` is computed from the global batch;
    * with smoothing: one `all_gather` of every entry's (index, new smoothed loss, seen flag, loss
      entering `tau` or NaN if invalid), 32 bytes per entry after a one-int64 size exchange, i.e.
      O(global batch) per step, never O(`num_samples`); every rank then writes all of the global
      batch's entries into its buffers in the single-process order (duplicates, also across ranks,
      behave as within one batch) and computes `tau` from the gathered losses;
    * fixed `tau` without smoothing: no communication.

    Every rank must call `forward` the same number of times (a collective per call; an empty local
    batch is allowed). The output and `.confidence` are those of the local entries, and
    `reduction='mean'` is the local mean, as for any PyTorch loss: DDP's gradient averaging then
    gives the global mean when the ranks' batches have equal sizes (otherwise scale rank `r`'s loss
    by `world_size * n_r / n_global`, as `curriculoss.harness.train` does). With `sync=False`, or
    outside a process group, or with world size 1, no collective call is made and each process keeps
    its own state. Collectives synchronise with the host, so only the distributed path does.

    Args:
        tau: `'avg'`, `'ema'` or a finite number.
        lam: $\lambda > 0$; 1 for CIFAR-10 and 0.25 for CIFAR-100 and WebVision in the paper.
        momentum: $\alpha$ of the `'ema'` threshold, in [0, 1).
        num_samples: dataset size, to enable per-sample smoothing; `None` disables it.
        smoothing: $\alpha'$ of the per-sample smoothing, in [0, 1).
        reduction: `'none'` | `'mean'` | `'sum'`.
        step: `'normalised'` (default) or `'paper'`: the batch objective, see **Step** above.
        sync: synchronise the state across the ranks of an initialised process group (see above).
        fused: compute the whole forward, the state updates (threshold, counts, smoothing buffers)
            and Eqs. 3-4 with Lambert W, as one `torch.compile`'d graph (one kernel on the CPU),
            compiled on the first call and reused for every batch size; the backward is one
            multiplication. Under distributed synchronisation the state update (with its collective)
            stays eager and only Eqs. 3-4 are compiled. Off by default: compiling takes seconds to a
            minute on a small CPU, and needs a working compiler (without one the eager code runs).

    Examples:
        >>> criterion = SuperLoss(tau="avg", lam=1.0, num_samples=50_000)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target, index = torch.randint(10, (8,)), torch.arange(8)
        >>> ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        >>> criterion(ce, index).backward()
    """

    confidence: Tensor | None

    def __init__(
        self,
        tau: str | float = "avg",
        lam: float = 1.0,
        momentum: float = 0.9,
        num_samples: int | None = None,
        smoothing: float = 0.9,
        reduction: str = "mean",
        *,
        step: str = "normalised",
        sync: bool = True,
        fused: bool = False,
    ):
        super().__init__()
        if isinstance(tau, str):
            if tau not in ("avg", "ema"):
                raise ValueError(f"tau must be 'avg', 'ema' or a finite number, got {tau!r}")
        elif isinstance(tau, bool) or not isinstance(tau, Real) or not math.isfinite(tau):
            raise ValueError(f"tau must be 'avg', 'ema' or a finite number, got {tau!r}")
        _check_lam(lam)
        for name, value in (("momentum", momentum), ("smoothing", smoothing)):
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0
        ):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
        _check_reduction(reduction)
        _check_step(step)

        self.tau_mode = tau if isinstance(tau, str) else "fixed"
        self.lam = float(lam)
        self.momentum = float(momentum)
        self.num_samples = num_samples
        self.smoothing = float(smoothing)
        self.reduction = reduction
        self.step = step
        self.sync = bool(sync)
        self.fused = bool(fused)
        fixed = 0.0 if isinstance(tau, str) else float(tau)
        # One-element (not 0-d) buffers: torch.compile (2.13) drops in-place updates of 0-d float64 buffers.
        self.register_buffer("tau", torch.full((1,), fixed, dtype=torch.float64))
        self.register_buffer("loss_sum", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(1, dtype=torch.float64))
        if num_samples is not None:
            self.register_buffer("smoothed_loss", torch.zeros(num_samples, dtype=torch.float64))
            self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))
        self.confidence = None
        self._cap_inputs = None
        self._np_state = None  # NumPy views of the buffers (see _buffer_views)

    def extra_repr(self) -> str:
        tau = self.tau_mode if self.tau_mode != "fixed" else f"{float(self.tau):g}"
        return (
            f"tau={tau!r}, lam={self.lam}, momentum={self.momentum}, num_samples={self.num_samples}, "
            f"smoothing={self.smoothing}, reduction={self.reduction!r}, step={self.step!r}"
        )

    def _check_inputs(self, loss: Tensor, index: Tensor | None, mask: Tensor | None) -> None:
        _check_loss(loss)
        if index is not None:
            if not isinstance(index, Tensor) or index.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"index must be an int64 (or int32) tensor of dataset indices, got {getattr(index, 'dtype', type(index).__name__)}")
            if index.shape != loss.shape:
                hint = (": SuperLoss takes per-sample losses, not logits; pass e.g. "
                        "F.cross_entropy(logits, target, reduction='none')"
                        if loss.dim() == 2 and index.shape == loss.shape[:1] else "")
                raise ValueError(f"index must have the shape of loss {tuple(loss.shape)}, got {tuple(index.shape)}{hint}")
            if index.device != loss.device:
                raise ValueError(f"index must be on the loss's device ({loss.device}), got {index.device}")
            if self.num_samples is None:
                raise ValueError("index was given but smoothing is off: pass num_samples=N to the constructor to smooth per sample")
        elif self.num_samples is not None and self.training:
            raise ValueError(f"index is required: smoothing is on (num_samples={self.num_samples}), so forward needs each sample's dataset index")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"mask must be a bool tensor (True = ignore), got {getattr(mask, 'dtype', type(mask).__name__)}")
            if mask.shape != loss.shape:
                raise ValueError(f"mask must have the shape of loss {tuple(loss.shape)}, got {tuple(mask.shape)}")

    def forward(self, loss: Tensor, index: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The SuperLoss of a batch of per-sample losses.

        Args:
            loss: per-sample losses (any shape).
            index: their dataset indices (a tensor shaped like `loss` on its device, or a NumPy integer
                array), required in training when smoothing is on.
            mask: `True` where an entry is ignored.

        Returns:
            The reduced $SL$ (Eq. 3).
        """
        if isinstance(index, np.ndarray) and isinstance(loss, Tensor) and np.issubdtype(index.dtype, np.integer):
            index = torch.from_numpy(index.astype(np.int64, copy=False)).to(loss.device)
        self._check_inputs(loss, index, mask)
        if loss.dtype in _LOW_PRECISION:
            out = self.forward(loss.float(), index, mask)
            self.confidence = self.confidence.to(loss.dtype)
            return out.to(loss.dtype)
        state = self.loss_sum.dtype  # float64, or float32 after .float()
        if state not in _MAX_LOSS:
            raise TypeError(f"SuperLoss state must be float64 (default) or float32, got {state}: after .half() "
                            "or .to(torch.bfloat16), call .float() (the losses may stay in half precision)")
        if not self.training:
            return self._evaluate(loss, index, mask)
        # Python-level check of the process group: the single-process path has no collective, no sync.
        sync = self.sync and is_distributed()
        normalise = self.step == "normalised"
        if not sync and not self.fused and _numpy_ok(loss, index, mask, self.loss_sum):
            out = self._numpy_step(loss, index, mask)  # small CPU batches; checks the index values itself
            if out is not None:
                return out
        keep = None if mask is None else ~mask
        smoothed = self.smoothed_loss if index is not None else None
        seen = self.seen if index is not None else None
        if index is not None:
            _check_index_values(index, self.num_samples, both_ends=self.fused)
        if self.fused and not sync and loss.device.type not in _FUSED_BROKEN and not torch.compiler.is_compiling():
            step = _compiled_step()
            if step is not None:
                try:
                    with torch.no_grad():
                        detached = loss.detach()
                        _dynamic(detached, index, keep)
                        out, sigma, factor, source, tau = step(
                            detached, index, keep, smoothed, seen, self.loss_sum, self.count, self.tau,
                            self.tau_mode, self.momentum, self.smoothing, self.lam, _precision(loss.dtype),
                            self.reduction, loss.dtype, normalise)
                except Exception:  # no working compiler at run time (e.g. no C++ toolchain): stay eager
                    _FUSED_BROKEN.add(loss.device.type)
                else:
                    self.confidence = sigma
                    self._cap_inputs = (detached if source is None else source, tau, keep)
                    return _Precomputed.apply(loss, out, factor)
        # The state is updated without autograd (no detach needed); every step below is one tensor
        # operation, because at small batch sizes their count, not their arithmetic, is the cost.
        with torch.no_grad():
            if sync:
                source, tau = self._synced_state(loss, index, keep)
            else:
                source, tau = _local_state(loss, index, keep, smoothed, seen, self.loss_sum, self.count, self.tau,
                                           self.tau_mode, self.momentum, self.smoothing)
        # Under synchronisation the step's constant is the global batch's (a collective, outside the node).
        out, sigma = _SuperLossFunction.apply(loss, source, tau, self.lam, self.reduction, keep, self.fused,
                                              normalise and not sync)
        if normalise and sync:
            out = out * self._global_step_scale(sigma, keep)
        self.confidence = sigma
        # kept for .at_cap, computed only when asked (no operation added to the step)
        self._cap_inputs = (loss.detach() if source is None else source, tau, keep)
        return out

    def _evaluate(self, loss: Tensor, index: Tensor | None, mask: Tensor | None) -> Tensor:
        """`eval()` mode: Eqs. 3-4 with the current threshold and smoothed losses; no buffer changes,
        no collective."""
        keep = None if mask is None else ~mask
        source, tau = None, self.tau
        if index is not None:
            _check_index_values(index, self.num_samples, both_ends=True)
            with torch.no_grad():
                valid = _valid(loss, keep, self.loss_sum.dtype)
                source, _, _ = _smoothed(loss, index, valid, self.smoothed_loss, self.seen, self.smoothing)
        tau = _tau_for(loss, index, tau)
        out, sigma = _SuperLossFunction.apply(loss, source, tau, self.lam, self.reduction, keep, False,
                                              self.step == "normalised")
        self.confidence = sigma
        self._cap_inputs = (loss.detach() if source is None else source, tau, keep)
        return out

    def _global_step_scale(self, sigma: Tensor, keep: Tensor | None) -> Tensor:
        """`1 / mean(sigma*)` over the kept entries of the global batch (one `all_reduce`, in the
        state's dtype)."""
        state = self.loss_sum.dtype
        with torch.no_grad():
            kept = sigma if keep is None else torch.where(keep, sigma, 0.0)
            count = kept.new_full((), float(kept.numel()), dtype=state) if keep is None else keep.sum().to(state)
            total, n = all_reduce_sum(torch.stack([kept.sum(dtype=state), count])).unbind()
            return (n / total.clamp_min(torch.finfo(state).tiny)).to(sigma.dtype)

    def _numpy_step(self, loss: Tensor, index: Tensor | None, mask: Tensor | None) -> Tensor | None:
        """The single-process forward in NumPy, for small CPU batches: the same state update and
        Eqs. 3-4 as the torch code, on views of the buffers (updated in place, no copy); `None` when a
        tensor cannot be viewed (the caller then runs torch's code, nothing changed)."""
        detached = loss.detach()
        views = _numpy_views(detached, index, mask)
        state = self._buffer_views()
        if views is None or state is None:
            return None
        x, idx, kp = views
        # One reduction checks both ends: seen as unsigned, a negative index is larger than any other.
        if idx is not None and idx.size and idx.view(_UNSIGNED[idx.dtype]).max() >= self.num_samples:
            raise IndexError(_index_message(self.num_samples, int(idx.min()), int(idx.max())))
        kp = None if kp is None else ~kp
        loss_sum, count, tau, smoothed, seen = state
        source = _local_state_numpy(x, idx, kp, smoothed, seen, loss_sum, count, tau, self.tau_mode,
                                    self.momentum, self.smoothing)
        t = tau if index is not None else tau.astype(_NP_DTYPE[_compute_dtype(loss.dtype)], copy=False)
        out, sigma, factor = _superloss_forward_numpy(x, source, t, self.lam, _precision(loss.dtype),
                                                      self.reduction, kp, loss.dtype, self.step == "normalised")
        shape = loss.shape
        src = detached if source is None else torch.from_numpy(source.reshape(shape))
        keep = None if mask is None else torch.from_numpy(kp.reshape(shape))
        tau_t = self._buffers["tau"]
        # plain attributes (nn.Module's __setattr__ costs microseconds a call)
        self.__dict__["confidence"] = torch.from_numpy(sigma.reshape(shape))
        self.__dict__["_cap_inputs"] = (src, _tau_for(loss, index, tau_t) if loss.dim() == 0 else tau_t, keep)
        finite = mask is None and bool(np.isfinite(out).all())  # host memory: no device to wait for
        out = torch.from_numpy(out.reshape(shape) if self.reduction == "none" else out)
        return _with_gradient(loss, detached, out, torch.from_numpy(factor.reshape(shape)), finite)

    def _buffer_views(self) -> list[np.ndarray | None] | None:
        """NumPy views of the state buffers, made once and reused while the buffers are the same
        tensors on the same memory (`.to()` and `.float()` replace them; `load_state_dict` copies
        into them)."""
        b = self._buffers
        buffers = (b["loss_sum"], b["count"], b["tau"], b.get("smoothed_loss"), b.get("seen"))
        key = tuple((id(t), t.data_ptr()) for t in buffers if t is not None)
        cached = self.__dict__["_np_state"]
        if cached is None or cached[0] != key:
            views = _numpy_views(*buffers)
            if views is None:
                return None
            cached = self._np_state = (key, buffers, views)  # buffers kept alive: their ids stay theirs
        return cached[2]

    def _synced_state(self, loss: Tensor, index: Tensor | None, keep: Tensor | None) -> tuple[Tensor | None, Tensor]:
        """The state update of a process group's rank: the global batch's, as one process would make it."""
        state = self.loss_sum.dtype
        valid = _valid(loss, keep, state)
        if index is None:  # one all_reduce of the batch's (sum, count)
            tau = _next_tau(self.tau_mode, self.momentum, loss, valid, self.loss_sum, self.count, self.tau, reduce=True)
            return None, _tau_for(loss, index, tau)
        source, stored, seen = _smoothed(loss, index, valid, self.smoothed_loss, self.seen, self.smoothing)
        # One all_gather of the global batch: (index, smoothed, seen, loss entering tau or NaN).
        entering = torch.where(valid, source, math.nan)
        if state != torch.float64 and self.num_samples > 2 ** 24:
            raise ValueError(f"float32 state packs indices as float32, exact up to 2**24; num_samples="
                             f"{self.num_samples} needs the default float64 state under distributed training")
        packed = torch.stack([index.reshape(-1).to(state), stored.reshape(-1),
                              (seen | valid).reshape(-1).to(state), entering.reshape(-1)], 1)
        packed = all_gather_cat(packed)
        g_index = packed[:, 0].to(torch.int64)
        g_valid = ~torch.isnan(packed[:, 3])
        tau = _next_tau(self.tau_mode, self.momentum, packed[:, 3], g_valid, self.loss_sum, self.count, self.tau)
        self.smoothed_loss.index_put_((g_index,), packed[:, 1])
        self.seen.index_put_((g_index,), packed[:, 2] > 0)
        return source, _tau_for(loss, index, tau)

    @property
    def at_cap(self) -> Tensor | None:
        """Where the last batch's beta was at or below the cap -2/e (sigma* = e); bool, shaped like the loss."""
        if self._cap_inputs is None:
            return None
        source, tau, keep = self._cap_inputs
        capped = (source - tau.to(source.dtype)) / self.lam <= -2.0 / math.e  # NaN compares False
        return capped if keep is None else capped & keep

