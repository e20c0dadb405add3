r"""Improved MAE (IMAE) of Wang, Kodirov, Hua and Robertson, *Improving MAE against CCE under Label Noise*.

The forward value is MAE (Eq. 11), $L = 2 (1 - p_y)$. Only the gradient w.r.t. the logits changes:
it keeps MAE's direction (Eq. 18),

$$
\frac{\partial L_\mathrm{MAE}}{\partial z_j} = 2 p_y (p_j - [j = y]), \qquad
\Big\lVert \frac{\partial L_\mathrm{MAE}}{\partial \mathbf{z}} \Big\rVert_1 = w_\mathrm{MAE} = 4 p_y (1 - p_y)
\quad \text{(Eq. 20)},
$$

and its L1 norm is replaced by (Eqs. 21-22)

$$
w_\mathrm{IMAE} = \exp\big(T\,p_y (1 - p_y)\big).
$$

So the gradient is $w_\mathrm{IMAE}\,\mathbf{d}$ with the unit-L1 direction $d_y = -1/2$ and
$d_j = p_j / (2 (1 - p_y)) = \tfrac12\,\mathrm{softmax}(\mathbf{z}_{\setminus y})_j$ for
$j \neq y$. The direction is computed as a softmax over the non-target logits, never as
$\nabla L_\mathrm{MAE} / w_\mathrm{MAE}$, so there is no 0/0 when $p_y \to 0$ or
$p_y \to 1$ (not even at $p_y = 1$ exactly in floating point). The IMAE gradient is not the
gradient of any loss with MAE's value, so it is a custom `torch.autograd.Function`; it is
differentiable once (no double backward).

`sample_weight` gives the implicit weights of CCE (Eq. 19), MAE (Eq. 20) and IMAE (Eq. 21);
with $p \sim U[0, 1]$ their variances (Eqs. 23-24) are the paper's 0.0889 (MAE) and, for
T = 16, 8, 4, 2, 1, 0.5, 0, the 354.113, 4.546, 0.299, 0.040, 0.007, 0.002, 0 of its Table 4.

Defaults: `T = 8` on noisy training data, `T = 0.5` on clean data (Sec. 5).

**Two variants (`variant=`).** `'authors'` (the default) is what the authors' training layer computes
(their Caffe loss layer `UnifiedWeightLoss`, in github.com/XinshaoAmosWang/Improving-Mean-Absolute-Error-against-CCE
at commit 507074ca), i.e. the code that produced the paper's numbers. For a batch of B samples, `'mean'` reduction:

$$
\frac{\partial L}{\partial \mathbf{z}_i} = \frac{w_i}{S}\,
\frac{\mathbf{p}_i - \mathbf{e}_{y_i}}{2 (1 - p_{y_i}) + \epsilon}, \qquad
S = 10^{-8} + \sum_{j=1}^{B} w_j, \quad \epsilon = 10^{-6}.
$$

It differs from Eq. 22 read literally (`variant='paper'`) in two ways that change training, each an
argument of its own:

- `eps` (authors: `1e-6`; paper: `0`): the unit-L1 direction is damped by
  $2(1-p_y) / (2(1-p_y) + \epsilon)$, so a sample the network already fits
  ($1 - p_y \ll 10^{-6}$) stops pulling. With `eps=0` every sample keeps a gradient of L1
  norm $w \ge 1$ forever, and nothing bounds the logits: on the plain MLP and LeNet-5 of this
  project the paper-literal form drove the logits past 1e3 within a few epochs and accuracy to chance.
- `normalize` (authors: `'weights'`; paper: `'batch'`): the batch gradient is divided by the sum
  of the weights $S$ instead of by B, i.e. the weights are rescaled to mean 1 over the batch
  (at T = 8 and typical logits the paper's form is $\bar w \approx 1.7$ times larger, and up to
  $e^{T/4}$ times). With `'weights'`, `reduction='none'` returns per-sample values whose
  gradients carry the factor $w_i B / S$ (so `.mean()` of them is the authors' batch gradient)
  and `'sum'` is B times `'mean'`. The sum runs over the batch the function is given; under
  `torch.distributed` over the global batch (`sync=True`, one `all_reduce` in the forward).

The value the authors' layer reports is weighted CE; it has no effect on training, so both variants
return the MAE value of Eq. 11.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from curriculoss.checks import (check_logits_target, check_number, check_reduction, check_target_values, compute_dtype,
                                 reduce)
from curriculoss._loss import Loss
from curriculoss.distributed import all_reduce_sum, is_distributed

__all__ = ["imae", "IMAE", "sample_weight", "VARIANTS", "NORMALIZATIONS"]

# The largest weight is exp(T / 4) (p_y (1 - p_y) <= 1/4), computed in float32 for float32 and half
# logits: past T = 4 log(3.4e38) = 355 it is inf and the gradients inf/NaN. T <= 300 keeps it below
# exp(75) = 3.7e32, with room for an upstream gradient scale (e.g. AMP's loss scaling) of 1e6. The
# paper's T are at most 16. (float16 gradients overflow at exp(T/4) > 65504, T > 44, times upstream.)
_T_MAX = 300.0


def _check_T(T: float) -> float:
    return check_number("T", T, low=0.0, high=_T_MAX)


VARIANTS = ("authors", "paper")
NORMALIZATIONS = ("weights", "batch")


def _as(x: Tensor, dtype: torch.dtype) -> Tensor:
    """`x` in `dtype`, without an operation when it is already."""
    return x if x.dtype == dtype else x.to(dtype)


class _IMAEFunction(torch.autograd.Function):
    """(logits (B, C), target (B, 1) int64, T, reduction, eps, normalize) -> the reduced MAE.

    The reduction is done here rather than by a separate autograd node, and every step uses few, small
    operations: at LeNet-5 sizes each costs microseconds, so their count is the cost of IMAE.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, T: float, reduction: str, eps: float,  # type: ignore[override]
                normalize: str, sync: bool):
        x = compute_dtype(logits)
        # expm1(log p_y) = p_y - 1, accurate as p_y -> 1 where 1 - p_y would cancel. The gather refuses
        # a target outside [0, C) (the values are not checked beforehand: three operations fewer).
        log_p = torch.log_softmax(x, dim=1)  # kept for the backward: p = exp(log p), not a second softmax
        try:
            log_py = log_p.gather(1, target)
        except RuntimeError:
            if target.device.type == "cpu":
                check_target_values(target, x.shape[1])
            raise
        py_minus_1 = torch.expm1(log_py)
        totals = None
        if normalize == "weights" and sync and is_distributed():
            # The weight sum and the sample count of the global batch, one all_reduce of two numbers; the
            # weights are taken relative to their bound exp(T / 4), so the sum cannot overflow.
            w_rel = torch.addcmul(py_minus_1, py_minus_1, py_minus_1).mul(-T).sub(T / 4.0).exp()
            # (new_full fills on the device: a torch.tensor from a Python number would be a host copy)
            totals = all_reduce_sum(torch.stack([w_rel.sum(), w_rel.new_full((), float(x.shape[0]))]))
        ctx.save_for_backward(log_p, target, py_minus_1, *(() if totals is None else (totals,)))
        ctx.T, ctx.reduction, ctx.input_dtype, ctx.eps, ctx.normalize = T, reduction, logits.dtype, eps, normalize
        if reduction == "mean":
            loss = py_minus_1.mean()
        elif reduction == "sum":
            loss = py_minus_1.sum()
        else:
            loss = py_minus_1.squeeze(1)
        loss = loss.mul(-2.0)
        return loss if loss.dtype == logits.dtype else loss.to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        log_p, t, em, *totals = ctx.saved_tensors  # em = p_y - 1
        g = grad_loss if grad_loss.dtype == log_p.dtype else grad_loss.to(log_p.dtype)
        B = log_p.shape[0]
        # log w = T p_y (1 - p_y) = -T (em + em^2)
        log_w = torch.addcmul(em, em, em).mul_(-ctx.T)
        if totals:
            # Distributed: w_i B_global / S_global per sample ('none', 'sum'); a rank's 'mean' is its local
            # mean, so DDP's average of the ranks' gradients is the one-process gradient of the global batch.
            s_rel, b_global = totals[0].unbind()
            factor = log_w.sub_(ctx.T / 4.0).exp_().mul_(b_global / s_rel)
            if ctx.reduction == "mean" and B > 0:
                factor = factor.div_(B)
        elif ctx.normalize == "weights":
            # w_i / S = softmax over the batch of log w (overflow-free for any T); 'mean' is exactly that,
            # 'sum' and 'none' carry B times it (weights rescaled to mean 1). The authors' 1e-8 in S
            # changes w_i / S by at most 1e-8 relative (w >= 1), below float64's use here.
            factor = torch.softmax(log_w, dim=0)
            if ctx.reduction != "mean":
                factor = factor.mul_(B)
        else:
            shift = math.log(B) if ctx.reduction == "mean" and B > 0 else 0.0
            factor = log_w.sub_(shift).exp_()
        factor = factor.mul_(g.unsqueeze(1) if ctx.reduction == "none" else g)
        if ctx.eps == 0.0:
            # Unit-L1 direction: for j != y, (p_j / (1 - p_y)) / 2 = softmax over the non-target logits / 2,
            # finite even when p_y == 1 in floating point; the target's slot (excluded with the lowest
            # float) is -1/2.
            # (log p differs from the logits by a constant per row: the same softmax)
            q = torch.softmax(log_p.scatter(1, t, torch.finfo(log_p.dtype).min), dim=1).scatter_(1, t, -1.0)
            return _as(q.mul_(factor.mul_(0.5)), ctx.input_dtype), None, None, None, None, None, None
        # The authors' direction (p - e_y) / (2 (1 - p_y) + eps), with p_y - 1 taken from expm1 (no
        # cancellation) and p_j = exp(log p_j) (accurate even where it is tiny). On the CPU, exp of the
        # forward's log-softmax costs 1-2 us where a second softmax of (128, 10) logits cost 25.
        q = torch.exp(log_p).scatter_(1, t, em)
        return _as(q.mul_(factor.div_(torch.rsub(em, ctx.eps, alpha=2.0))), ctx.input_dtype), None, None, None, None, None, None


def _resolve_variant(variant: str, eps: float | None, normalize: str | None) -> tuple[float, str]:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if eps is None:
        eps = 1e-6 if variant == "authors" else 0.0
    eps = check_number("eps", eps, low=0.0)
    if normalize is None:
        normalize = "weights" if variant == "authors" else "batch"
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS} or None, got {normalize!r}")
    return eps, normalize


def _imae(logits: Tensor, target: Tensor, T: float, reduction: str, eps: float, normalize: str,
          sync: bool = True) -> Tensor:
    target = check_logits_target(logits, target, min_classes=2, values=False)
    return _IMAEFunction.apply(logits, target.unsqueeze(1), T, reduction, eps, normalize, bool(sync))


def imae(logits: Tensor, target: Tensor, T: float = 8.0, reduction: str = "mean", *, variant: str = "authors",
         eps: float | None = None, normalize: str | None = None, sync: bool = True) -> Tensor:
    r"""IMAE: the MAE value $2 (1 - p_y)$ (Eq. 11) with the gradient of Eq. (22).

    The gradient w.r.t. `logits` of each sample's loss has MAE's direction (Eq. 18) and L1 norm
    $\exp(T p_y (1 - p_y))$ (Eq. 21), times the upstream gradient. By default it is computed as the
    authors' training layer does (`variant='authors'`: direction damped by `eps`, batch normalised by
    the sum of the weights); `variant='paper'` is Eq. 22 read literally (`'mean'` divides by B).
    See the module docstring for the equations.

    Args:
        logits: unnormalised scores, shape (B, C) with C >= 2, floating point; float16/bfloat16 are
            computed in float32, and the loss and gradient come back in the input dtype.
        target: class indices in [0, C), shape (B,), integer.
        T: scale of the exponential weight, >= 0. The paper uses `T = 8` on noisy training data
            (the default) and `T = 0.5` on clean data (Sec. 5). `T = 0` weights every sample by 1.
        reduction: `'none'` | `'mean'` | `'sum'`.
        variant: `'authors'` (default: the code that produced the paper's numbers) or `'paper'`
            (Eq. 22 literally); it sets the defaults of the next two arguments.
        eps: the damping of the direction's denominator `2 (1 - p_y) + eps`, >= 0; `None`: the
            variant's (`1e-6` authors, `0` paper: the exact unit-L1 direction).
        normalize: `'weights'` (divide the batch gradient by the sum of the weights) or `'batch'`
            (by B, for `'mean'`); `None`: the variant's (`'weights'` authors, `'batch'` paper).
        sync: with `normalize='weights'` inside an initialised `torch.distributed` process group of
            more than one process, sum the weights over the global batch (one `all_reduce` of two
            numbers in the forward; every rank must call it, an empty local batch included), so that
            DDP's gradient average, with each rank's loss its local mean (times
            `world_size * n_local / n_global` when the local batches differ in size), equals one process on
            the global batch.
            `False`: each rank normalises by its own weight sum. Outside a process group nothing is
            exchanged.

    Returns:
        The MAE value, shape (B,) for `'none'`, else a scalar, in the dtype of `logits`.

    Examples:
        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> imae(z, torch.tensor([1, 0, 4, 9]), T=8.0).backward()
        >>> imae(z, torch.tensor([1, 0, 4, 9]), T=8.0, variant="paper").backward()
    """
    T = _check_T(T)
    check_reduction(reduction)
    eps, normalize = _resolve_variant(variant, eps, normalize)
    return _imae(logits, target, T, reduction, eps, normalize, sync)


class IMAE(Loss):
    """Module form of `imae`; `T = 8` (noisy data) by default, 0.5 on clean data (Sec. 5).

    `variant`, `eps` and `normalize` as in [`imae`][curriculoss.imae.imae] (default: the authors' layer).
    After each forward, `confidence` holds the batch's per-sample weights
    $w_\\mathrm{IMAE} = \\exp(T p_y (1 - p_y))$ (Eq. 21), detached, shape (B,), float32 (float64 for
    float64 logits), before any normalisation.
    """

    _settings = ("T", "reduction", "variant", "eps", "normalize")

    def __init__(self, T: float = 8.0, reduction: str = "mean", *, variant: str = "authors",
                 eps: float | None = None, normalize: str | None = None, sync: bool = True):
        T = _check_T(T)
        super().__init__(reduction)
        self.T = T
        self.variant = variant
        self.eps, self.normalize = _resolve_variant(variant, eps, normalize)
        self.sync = bool(sync)
        self.confidence: Tensor | None = None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """`imae` of `logits` `(B, C)` and `target` `(B,)` with this module's settings; sets `confidence`."""
        # The reduction stays inside the autograd function: with normalize='weights', 'none' carries
        # the factor B / S, which 'mean' and 'sum' apply themselves.
        loss = _imae(logits, target, self.T, "none", self.eps, self.normalize, self.sync)
        with torch.no_grad():
            # p_y (1 - p_y) = (1 - L/2) L/2 from the MAE value L = 2 (1 - p_y)
            half = loss.detach().to(torch.promote_types(loss.dtype, torch.float32)) * 0.5
            self.confidence = torch.exp(self.T * half * (1.0 - half))
        return reduce(loss, self.reduction)


_WEIGHTS = ("cce", "mae", "imae")


def sample_weight(p: Tensor | float, loss: str = "imae", T: float = 8.0) -> Tensor:
    r"""The implicit weight of a sample, the L1 norm of its loss's gradient w.r.t. the logits.

    - `'cce'`: $w_\mathrm{CCE} = 2 (1 - p)$ (Eq. 19);
    - `'mae'`: $w_\mathrm{MAE} = 4 p (1 - p)$ (Eq. 20);
    - `'imae'`: $w_\mathrm{IMAE} = \exp(T p (1 - p))$ (Eq. 21).

    Args:
        p: the probability of the labelled class, $p(y|\mathbf{x})$ in [0, 1]; a tensor of any
            shape, or a number (values are not checked).
        loss: `'cce'` | `'mae'` | `'imae'`.
        T: IMAE's scale, >= 0 (used by `'imae'` only); default 8 (the paper, noisy data).

    Returns:
        The weights, shaped like `p` (a 0-d float tensor for a number).

    Examples:
        >>> sample_weight(torch.tensor([0.0, 0.5, 1.0]), "imae", T=8.0)
        tensor([1.0000, 7.3891, 1.0000])
    """
    if loss not in _WEIGHTS:
        raise ValueError(f"loss must be one of {_WEIGHTS}, got {loss!r}")
    T = _check_T(T)
    if not isinstance(p, Tensor):
        p = torch.as_tensor(p, dtype=torch.get_default_dtype())
    elif not p.is_floating_point():
        raise TypeError(f"p must be a floating-point tensor of probabilities, got dtype {p.dtype}")
    if loss == "cce":
        return 2.0 * (1.0 - p)
    if loss == "mae":
        return 4.0 * p * (1.0 - p)
    return torch.exp(T * p * (1.0 - p))
