"""The principal branch W0 of the Lambert W function, tensor-native and differentiable.

`W(x)` is the solution `w >= -1` of `w * exp(w) = x`, defined for `x >= -1/e`. The SuperLoss
needs it for its closed-form confidence (Castells et al. 2020, Eq. 4); computing it with scipy on the
host would copy every batch's losses to the CPU and break `torch.compile`. This module evaluates it
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

Large CPU tensors are evaluated in cache-sized pieces; with one torch thread, CPU tensors of every size
take a NumPy copy of the same steps (see `_NUMPY_BELOW`).

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

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["lambertw"]

_INV_E = 1.0 / math.e  # float64 1/e
_INV_E_LO64 = -1.2428753672788363e-17  # 1/e - float64(1/e), from a 50-digit value of 1/e
_INV_E_F32 = 0.3678794503211975  # float32(1/e) (exactly representable)
_INV_E_LO32 = -9.1497551881701012e-09  # 1/e - float32(1/e), from the same value
_INV_2E = 0.5 / math.e

# Starting point v0 = A q - K q log1p(q) / (B + q), q = log1p(C sqrt(2 e delta)), one set of constants
# per dtype, fitted by minimising the largest error after the dtype's Halley steps in units of its
# contract: float32 (one step) over x in [-1/e, 1e38], 0.77 units in exact arithmetic; float64 (two
# steps) over [-1/e, 1e307], 0.06 units. Small p: A C sqrt(2e) ~ 1 (v ~ p); large x: A ~ 2 and
# v0 ~ 2 log p - log log p, the asymptotics of W + 1.
#                      C sqrt(2e) (folded)                        A                   K                   B
_START = {
    torch.float32: (0.5092515604880126 * math.sqrt(2 * math.e), 2.0150119119640295, 1.2136459813825438, 2.5446849639274207),
    torch.float64: (0.4877791654276562 * math.sqrt(2 * math.e), 2.000305097791988, 1.0098679530408523, 2.1500824916922987),
}


# Unit in the last place of 1/e in float16 (2^-12) and bfloat16 (2^-9): their inputs within two of
# them below -1/e are -1/e rounded to that dtype.
_HALF_ULP_INV_E = {torch.float16: 2.0 ** -12, torch.bfloat16: 2.0 ** -9}


def _split_inv_e(dtype: torch.dtype) -> tuple[float, float, float]:
    """(hi, lo, tolerance) with hi + lo = 1/e, hi exact in `dtype`; tolerance = 2 ulp of 1/e."""
    if dtype == torch.float64:
        return _INV_E, _INV_E_LO64, 2 * 2.0 ** -54
    return _INV_E_F32, _INV_E_LO32, 2 * 2.0 ** -25


def _iterations(dtype: torch.dtype) -> int:
    """Halley steps for the dtype's contract: 1e-12 needs two, float32's 2e-6 one."""
    return 2 if dtype == torch.float64 else 1


def _precision(dtype: torch.dtype) -> torch.dtype:
    """The accuracy contract a result in `dtype` needs: float64's, or float32's for every other dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _half_delta_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """Clamp range of `(x + 1/e) / 2`: a tiny floor keeps `v > 0` (Halley divides by `v`; at
    `v = tiny` its step is 0, so the branch point gives `W = -1` exactly), and half the largest
    float makes `x = +inf` finite inside (the caller restores the infinity).

    The float32 floor, 1e-24, leaves `v` near 3e-12 at the branch point: `W = v - 1` and
    `1 - v` still round to exactly -1 and 1, and torch's float32 `expm1` on the CPU stays on its
    fast path, which it leaves below about 1e-15 (8 times slower there, measured at 200,000 values;
    the cap of SuperLoss, where every easy sample lies, sat on that slow path with a floor of 1e-37)."""
    if dtype == torch.float64:
        return 1e-300, torch.finfo(torch.float64).max / 2
    return 1e-24, torch.finfo(torch.float32).max / 2


def _expm1_compiled(v: Tensor) -> Tensor:
    """`expm1` for the compiled path: `tanh(v/2) (e^v + 1)`, accurate to a few ulp for small `v`.
    (TorchInductor's vectorised CPU code computes `expm1` as `exp(v) - 1` (torch 2.13), which loses
    all accuracy near 0, exactly where the branch point needs it.)"""
    return torch.tanh(v * 0.5) * (torch.exp(v) + 1.0)


# torch's own test for active torch.func transforms (private; absent: assume they may be active)
_TRANSFORMS_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", None)


def _in_place(compiled: bool = False) -> bool:
    """Whether the eager code may write into buffers it made (`out=`): on large tensors a new buffer
    costs more than the arithmetic (its pages are faulted in on first touch). Not under `torch.func`'s
    transforms, whose batching rules have no `out=` variants (`vmap` refuses them); compiled
    graphs take `out=` (and the transforms' check is not traced)."""
    if compiled or torch.compiler.is_compiling():
        return True
    return _TRANSFORMS_ACTIVE is not None and not _TRANSFORMS_ACTIVE()


def _halley(v: Tensor, half_delta: Tensor, compiled: bool, scale: float, em: Tensor | None,
            den: Tensor | None) -> Tensor:
    """One Halley step for `f(v) = (v - 1) e^v - e x`, every term divided by `2e` so that nothing
    overflows below the largest float (`f'/(2e) = v e^v / (2e) ~ x v / (2 W)`), and multiplied by
    `scale` when `half_delta` holds `scale (x + 1/e) / 2` (the step f/f'' is the same).
    `em` and `den`: scratch buffers like `v`, written over along with `v` itself (see
    `_in_place`), or `None`: every result a new tensor."""
    reuse = em is not None
    em = _expm1_compiled(v) if compiled else torch.expm1(v, out=em)
    den = torch.mul(v, _INV_2E * scale, out=den)
    den = torch.addcmul(den, den, em, out=den if reuse else None)  # f'/(2e) = v (1 + em) / (2e)
    # f/(2e) = (v e^v - em)/(2e) - (x + 1/e)/2 (over em, no longer needed)
    f = torch.add(den, em, alpha=-_INV_2E * scale, out=em if reuse else None).sub_(half_delta)
    # Halley: v - f / (f' - f f'' / (2 f')), f''/f' = (v + 1)/v; only ratios of f, f' enter.
    # The denominator f' - f (v + 1) / (2v), written without the product f v:
    den = torch.addcdiv(den, f, v, value=-0.5, out=den if reuse else None).add_(f, alpha=-0.5)
    return torch.addcdiv(v, f, den, value=-1.0, out=v if reuse else None)


def _start_scale(precision: torch.dtype) -> float:
    """The factor `s = 2 c^2` of the start's square root: a caller that forms `s (x + 1/e) / 2`
    directly (SuperLoss folds it into its own affine map) and passes `scaled=True` to
    `_w_plus_one` saves the start's one multiplication. Only for arguments below
    `max / (2 s)`: the standalone `lambertw` keeps the unscaled form for its whole range."""
    return 2.0 * _START[precision][0] ** 2


def _w_plus_one(half_delta: Tensor, precision: torch.dtype, compiled: bool = False, scaled: bool = False,
                inplace: bool = True, q: Tensor | None = None) -> Tensor:
    """`v = W(x) + 1` from `(x + 1/e) / 2` (times `_start_scale` when `scaled`), already
    clamped to a positive finite range (see `_half_delta_bounds`), accurate to the contract of
    `precision` (float32 or float64; the arithmetic is that of `half_delta`, which may be more
    precise). `inplace`: work in the buffers it makes (see `_in_place`), and in `q`, a buffer
    like `half_delta` free to be written over, when given."""
    c, a, k, b = _START[precision]
    iterations = _iterations(precision)
    if scaled:  # sqrt(2 c^2 hd) = c sqrt(2 hd)
        scale = _start_scale(precision)
        q = torch.sqrt(half_delta, out=q).log1p_()
    else:
        scale = 1.0
        q = torch.sqrt(half_delta, out=q).mul_(c * math.sqrt(2.0)).log1p_()
    # v0 = a q - k q log1p(q) / (b + q), formed over q's memory; the two temporaries are then the
    # Halley steps' scratch buffers
    den = q + b
    t = torch.log1p(q).mul_(q)
    v = torch.addcdiv(q.mul_(a), t, den, value=-k, out=q if inplace else None)
    for _ in range(iterations):
        v = _halley(v, half_delta, compiled, scale, *((t, den) if inplace else (None, None)))
    return v


def _lambertw_forward(x: Tensor, compiled: bool = False, out: Tensor | None = None) -> Tensor:
    hi, lo, tol = _split_inv_e(x.dtype)
    # (x + 1/e)/2, accurately: x/2 + hi/2 is exact near -1/e (Sterbenz), lo/2 restores the rest.
    half_delta = (x * 0.5).add_(0.5 * hi).add_(0.5 * lo)
    inplace = _in_place(compiled)
    # Within tol below -1/e the clamp gives v = tiny, W = -1. Further below, NaN: min(hd + tol/2, 0) is
    # 0 inside the domain and its tolerance and negative below them (-inf at -inf), so that adding it to
    # the clamped value leaves a negative number there, of which the start's square root makes NaN; NaN
    # stays NaN through the clamp and the arithmetic. (Arithmetic instead of a comparison and a masked
    # fill: torch's CPU kernels writing or reading bool masks are 2-4 times slower than a float add.)
    below = torch.add(half_delta, 0.5 * tol).clamp_(max=0.0)
    clamped = torch.clamp(half_delta, *_half_delta_bounds(x.dtype), out=half_delta if inplace else None)
    clamped = clamped.add_(below)
    w = _w_plus_one(clamped, x.dtype, compiled, inplace=inplace, q=below if inplace else None).sub_(1.0)
    # Below 2^-24 (float32) / 2^-53 (float64), W = x - x^2 rounds to x: return x itself (v - 1 would
    # keep only an absolute accuracy there). +inf was clamped to a finite value inside: x - max is +inf
    # there and at most 0 elsewhere, below every W >= -1, so the maximum restores it (NaN stays NaN).
    # Written over half_delta (no longer needed) and w.
    tiny = 2.0 ** -53 if x.dtype == torch.float64 else 2.0 ** -24
    keep_x = torch.abs(x, out=half_delta if inplace else None) < tiny
    w = torch.where(keep_x, x, w, out=w if inplace else None)
    top = torch.sub(x, torch.finfo(x.dtype).max, out=half_delta if inplace else None)
    return torch.maximum(w, top, out=out if out is not None else w if inplace else None)


@functools.lru_cache(maxsize=None)
def _compiled_forward():
    """`_lambertw_forward` as one fused kernel, compiled once per process (dynamic shapes, so a new
    batch size does not recompile); `None` when `torch.compile` is unavailable or fails."""
    try:
        return torch.compile(_lambertw_forward, dynamic=True, fullgraph=True)
    except Exception:  # pragma: no cover - no compiler on this platform
        return None


# Below this many elements a CPU tensor is evaluated with NumPy: the same arithmetic as
# _lambertw_forward, at about 1 us per operation instead of torch's 4-5 us dispatch, so that a batch-sized
# call costs no more than scipy's (docs/benchmarks.md). Above it torch's kernels, which run on all of
# torch's threads, win, except with one thread: NumPy's own float32 expm1 and log1p are 2-4 times faster
# than torch's (2.13) there, so with one thread lambertw takes the NumPy copy at every size, in pieces of
# _NUMPY_PIECE elements that stay in the core's cache (1M values: 7.3 ms against 10.5 ms for torch's
# operations in pieces, and 13 ms whole; benchmarks/bench_lambertw.py --threads 1). 0 turns the NumPy
# copies off (tests of torch's operations). SuperLoss's module and functional forms use the same
# threshold for their own NumPy copies.
_NUMPY_BELOW = 8192
_NUMPY_PIECE = 1 << 14


@functools.lru_cache(maxsize=None)
def _numpy_constants(dtype: np.dtype, precision: torch.dtype, scaled: bool) -> tuple[np.ndarray, ...]:
    """The constants of `_w_plus_one_numpy` as 0-d arrays of `dtype`: NumPy multiplies an
    array by a 0-d array of its own dtype in about half the time it takes with a Python float."""
    c, a, k, b = _START[precision]
    scale = _start_scale(precision) if scaled else 1.0
    values = (c * math.sqrt(2.0), a, -k, b, _INV_2E * scale, -_INV_2E * scale, -0.5)
    return tuple(np.array(v, dtype=dtype) for v in values)


def _w_plus_one_numpy(hd: np.ndarray, precision: torch.dtype, scaled: bool = False) -> np.ndarray:
    """`_w_plus_one` in NumPy, step for step (in place where torch's code allocates): `hd` is the
    clamped `(x + 1/e) / 2` (times `_start_scale` when `scaled`), a 1-D float32 or float64
    array; the arithmetic is `hd`'s, the constants and step count `precision`'s."""
    c, a, mk, b, inv_2e, minus_inv_2e, minus_half = _numpy_constants(hd.dtype, precision, scaled)
    q = np.sqrt(hd)
    if not scaled:
        q *= c
    np.log1p(q, out=q)
    t = np.log1p(q)
    t *= q
    t /= q + b
    v = q * a
    t *= mk
    v += t
    for _ in range(_iterations(precision)):
        em = np.expm1(v)
        vs = v * inv_2e
        den = vs * em
        den += vs  # f'/(2e)
        f = em * minus_inv_2e
        f += den
        f -= hd  # f/(2e)
        t = f / v
        t += f
        t *= minus_half
        den += t  # f' - f (v + 1) / (2v)
        f /= den
        v -= f
    return v


@functools.lru_cache(maxsize=None)
def _lambertw_constants(dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """`_lambertw_numpy`'s constants as 0-d arrays of `dtype` (see `_numpy_constants`)."""
    prec = torch.float64 if dtype == np.float64 else torch.float32
    hi, lo, tol = _split_inv_e(prec)
    low, high = _half_delta_bounds(prec)
    tiny = 2.0 ** -53 if prec == torch.float64 else 2.0 ** -24
    return tuple(np.array(v, dtype=dtype) for v in (0.5, 0.5 * hi, 0.5 * lo, low, high, 1.0, tiny, -0.5 * tol))


def _lambertw_numpy(x: np.ndarray) -> np.ndarray:
    """`_lambertw_forward` in NumPy, step for step, for float32 or float64 `x`."""
    shape, x = x.shape, x.reshape(-1)  # 1-D: NumPy turns 0-d results into scalars, which copyto cannot fill
    half, half_hi, half_lo, low, high, one, tiny, floor = _lambertw_constants(x.dtype)
    with np.errstate(all="ignore"):  # NaN and inf inputs flow through as in torch
        half_delta = x * half
        half_delta += half_hi
        half_delta += half_lo
        v = _w_plus_one_numpy(np.minimum(np.maximum(half_delta, low), high),
                              torch.float64 if x.dtype == np.float64 else torch.float32)
        v -= one  # W
        # Special values (tiny, +inf, below the domain, NaN) are rare: one test for all of them (host
        # memory: the branch waits for no device).
        magnitude = np.abs(x)
        if not ((magnitude >= tiny) & (magnitude < np.inf) & (half_delta >= floor)).all():
            np.copyto(v, x, where=magnitude < tiny)
            np.copyto(v, x, where=x == np.inf)
            np.copyto(v, np.nan, where=~(half_delta >= floor))
    return v.reshape(shape)


def _lambertw_numpy_pieces(x: np.ndarray) -> np.ndarray:
    """`_lambertw_numpy` over pieces of `_NUMPY_PIECE` elements, written into one result."""
    if x.size <= _NUMPY_PIECE:
        return _lambertw_numpy(x)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, _NUMPY_PIECE):
        out[start:start + _NUMPY_PIECE] = _lambertw_numpy(flat[start:start + _NUMPY_PIECE])
    return out.reshape(x.shape)


def _numpy_ok(*tensors) -> bool:
    """Whether these (CPU) tensors take the NumPy copies: plain CPU tensors outside torch.compile, small
    ones, or of any size when torch runs on one thread (see `_NUMPY_BELOW`; 0 turns the copies off)."""
    return (not torch.compiler.is_compiling()
            and (tensors[0].numel() < _NUMPY_BELOW or (_NUMPY_BELOW > 0 and torch.get_num_threads() == 1))
            and all(t is None or (type(t) is Tensor and t.device.type == "cpu") for t in tensors))


def _forward(x: Tensor, fused: bool) -> Tensor:
    if _numpy_ok(x) and (x.numel() < _NUMPY_BELOW or not fused):  # fused=True: the kernel for large ones
        try:  # CPU memory only: .numpy() is a view of it, no copy and no device to wait for
            return torch.from_numpy(_lambertw_numpy_pieces(x.detach().numpy()))
        except (RuntimeError, TypeError):  # a tensor NumPy cannot view (e.g. under torch.func): torch
            pass
    if fused and not torch.compiler.is_compiling():
        fn = _compiled_forward()
        if fn is not None:
            try:
                return fn(x, True)
            except Exception:  # compiler missing at run time (no C++ toolchain...): stay eager
                _compiled_forward.cache_clear()
                _DISABLED.add(x.device.type)
    if x.device.type != "cpu" or torch.compiler.is_compiling() or not _in_place():
        return _lambertw_forward(x)  # one graph when compiled; new buffers under torch.func's transforms
    piece = _CPU_PIECE * torch.get_num_threads()
    if x.numel() <= piece:
        return _lambertw_forward(x)
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    for src, dst in zip(flat.split(piece), out.split(piece)):
        _lambertw_forward(src, out=dst)
    return out.view(x.shape)


# Large CPU tensors are evaluated with torch's operations in pieces of this many elements per thread:
# the buffers of a piece stay in the core's cache across the 29 operations, instead of each operation
# streaming the whole tensor through memory (1M values, one thread: 10.5 ms against 13 ms whole).
_CPU_PIECE = 1 << 16

_DISABLED: set[str] = set()


class _LambertW(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, fused: bool) -> Tensor:  # type: ignore[override]
        return _forward(x, fused and x.device.type not in _DISABLED)

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
            results equal the eager ones within the accuracy below. CPU tensors of fewer than 8,192
            values take a NumPy copy of the same steps instead (cheaper than torch's dispatch there),
            and so do CPU tensors of every size when torch runs on one thread (NumPy's float32
            `expm1` and `log1p` are faster than torch's).

    Returns:
        A tensor like `x`. NaN where `x < -1/e` beyond rounding (within two units in the last
        place of `-1/e` the result is `-1`), `+inf` at `+inf`.

    Accuracy against a 50-digit reference (tests/test_lambertw.py): float64 within 1e-12 relative +
    1e-12 absolute on `[-1/e, 1e300]`, float32 within 2e-6 relative + 1e-6 absolute on
    `[-1/e, 3e38]`, subnormals included.

    Differentiable: `dW/dx = W / (x (1 + W))`, equal to 1 at 0 and infinite at `-1/e`.
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
        return _apply(xf, fused).to(x.dtype)
    return _apply(x, fused)


def _apply(x: Tensor, fused: bool) -> Tensor:
    """Through the autograd node only when a gradient is wanted (the node's own cost is about 30 us)."""
    if x.requires_grad and torch.is_grad_enabled():
        return _LambertW.apply(x, fused)
    return _forward(x, fused and x.device.type not in _DISABLED)
