"""The steps of `lambertw`: `W0(x)` by a fixed sequence of element-wise tensor operations.

The method (a start fitted per dtype, then Halley steps on `v = W + 1` from `(x + 1/e) / 2`), its
accuracy and its domain are described in `curriculoss.lambertw`, the public module, which calls
`evaluate`. `w_plus_one` (the start and the Halley steps) is also what SuperLoss's closed-form
confidence (Eq. 4) evaluates, behind its own affine map (`start_scale`, `half_delta_bounds`).
Everything here runs without autograd and without host synchronisation, on any device, and as one
graph under `torch.compile`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from curriculoss._compile import call_compiled

INV_E = 1.0 / math.e  # float64 1/e
_INV_E_LO64 = -1.2428753672788363e-17  # 1/e - float64(1/e), from a 50-digit value of 1/e
INV_E_F32 = 0.3678794503211975  # float32(1/e) (exactly representable)
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
HALF_ULP_INV_E = {torch.float16: 2.0 ** -12, torch.bfloat16: 2.0 ** -9}


def _split_inv_e(dtype: torch.dtype) -> tuple[float, float, float]:
    """(hi, lo, tolerance) with hi + lo = 1/e, hi exact in `dtype`; tolerance = 2 ulp of 1/e."""
    if dtype == torch.float64:
        return INV_E, _INV_E_LO64, 2 * 2.0 ** -54
    return INV_E_F32, _INV_E_LO32, 2 * 2.0 ** -25


def _iterations(dtype: torch.dtype) -> int:
    """Halley steps for the dtype's contract: 1e-12 needs two, float32's 2e-6 one."""
    return 2 if dtype == torch.float64 else 1


def precision_of(dtype: torch.dtype) -> torch.dtype:
    """The accuracy contract a result in `dtype` needs: float64's, or float32's for every other dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def half_delta_bounds(dtype: torch.dtype) -> tuple[float, float]:
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


def in_place(compiled: bool = False) -> bool:
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
    `in_place`), or `None`: every result a new tensor."""
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


def start_scale(precision: torch.dtype) -> float:
    """The factor `s = 2 c^2` of the start's square root: a caller that forms `s (x + 1/e) / 2`
    directly (SuperLoss folds it into its own affine map) and passes `scaled=True` to
    `w_plus_one` saves the start's one multiplication. Only for arguments below
    `max / (2 s)`: the standalone `lambertw` keeps the unscaled form for its whole range."""
    return 2.0 * _START[precision][0] ** 2


def w_plus_one(half_delta: Tensor, precision: torch.dtype, compiled: bool = False, scaled: bool = False,
                inplace: bool = True, q: Tensor | None = None) -> Tensor:
    """`v = W(x) + 1` from `(x + 1/e) / 2` (times `start_scale` when `scaled`), already
    clamped to a positive finite range (see `half_delta_bounds`), accurate to the contract of
    `precision` (float32 or float64; the arithmetic is that of `half_delta`, which may be more
    precise). `inplace`: work in the buffers it makes (see `in_place`), and in `q`, a buffer
    like `half_delta` free to be written over, when given."""
    c, a, k, b = _START[precision]
    iterations = _iterations(precision)
    if scaled:  # sqrt(2 c^2 hd) = c sqrt(2 hd)
        scale = start_scale(precision)
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


def lambertw_forward(x: Tensor, compiled: bool = False, out: Tensor | None = None) -> Tensor:
    hi, lo, tol = _split_inv_e(x.dtype)
    # (x + 1/e)/2, accurately: x/2 + hi/2 is exact near -1/e (Sterbenz), lo/2 restores the rest.
    half_delta = (x * 0.5).add_(0.5 * hi).add_(0.5 * lo)
    inplace = in_place(compiled)
    # Within tol below -1/e the clamp gives v = tiny, W = -1. Further below, NaN: min(hd + tol/2, 0) is
    # 0 inside the domain and its tolerance and negative below them (-inf at -inf), so that adding it to
    # the clamped value leaves a negative number there, of which the start's square root makes NaN; NaN
    # stays NaN through the clamp and the arithmetic. (Arithmetic instead of a comparison and a masked
    # fill: torch's CPU kernels writing or reading bool masks are 2-4 times slower than a float add.)
    below = torch.add(half_delta, 0.5 * tol).clamp_(max=0.0)
    clamped = torch.clamp(half_delta, *half_delta_bounds(x.dtype), out=half_delta if inplace else None)
    clamped = clamped.add_(below)
    w = w_plus_one(clamped, x.dtype, compiled, inplace=inplace, q=below if inplace else None).sub_(1.0)
    # Below 2^-24 (float32) / 2^-53 (float64), W = x - x^2 rounds to x: return x itself (v - 1 would
    # keep only an absolute accuracy there). +inf was clamped to a finite value inside: x - max is +inf
    # there and at most 0 elsewhere, below every W >= -1, so the maximum restores it (NaN stays NaN).
    # Written over half_delta (no longer needed) and w.
    tiny = 2.0 ** -53 if x.dtype == torch.float64 else 2.0 ** -24
    keep_x = torch.abs(x, out=half_delta if inplace else None) < tiny
    w = torch.where(keep_x, x, w, out=w if inplace else None)
    top = torch.sub(x, torch.finfo(x.dtype).max, out=half_delta if inplace else None)
    return torch.maximum(w, top, out=out if out is not None else w if inplace else None)




# Large CPU tensors are evaluated in pieces of this many elements per thread: the buffers of a piece stay
# in the core's cache across the 29 operations, instead of each operation streaming the whole tensor
# through memory (1M values, one thread: 10.5 ms against 13 ms whole).
_CPU_PIECE = 1 << 16


def evaluate(x: Tensor, fused: bool = False) -> Tensor:
    """`W(x)` for a float32 or float64 tensor, without autograd: one compiled kernel when `fused`
    (and a compiler works), else the eager operations, in cache-sized pieces on large CPU tensors."""
    if fused:
        w = call_compiled(lambertw_forward, True, x.device.type, x, True)
        if w is not None:
            return w
    if x.device.type != "cpu" or torch.compiler.is_compiling() or not in_place():
        return lambertw_forward(x)  # one graph when compiled; new buffers under torch.func's transforms
    piece = _CPU_PIECE * torch.get_num_threads()
    if x.numel() <= piece:
        return lambertw_forward(x)
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    for src, dst in zip(flat.split(piece), out.split(piece)):
        lambertw_forward(src, out=dst)
    return out.view(x.shape)
