r"""Improved MAE (IMAE) of Wang, Kodirov, Hua and Robertson, *Improving MAE against CCE under Label Noise*.

The forward value is MAE (Eq. 11), :math:`L = 2 (1 - p_y)`. Only the gradient w.r.t. the logits changes:
it keeps MAE's direction (Eq. 18),

.. math::

    \frac{\partial L_\mathrm{MAE}}{\partial z_j} = 2 p_y (p_j - [j = y]), \qquad
    \Big\lVert \frac{\partial L_\mathrm{MAE}}{\partial \mathbf{z}} \Big\rVert_1 = w_\mathrm{MAE} = 4 p_y (1 - p_y)
    \quad \text{(Eq. 20)},

and its L1 norm is replaced by (Eqs. 21-22)

.. math::

    w_\mathrm{IMAE} = \exp\big(T\,p_y (1 - p_y)\big).

So the gradient is :math:`w_\mathrm{IMAE}\,\mathbf{d}` with the unit-L1 direction :math:`d_y = -1/2` and
:math:`d_j = p_j / (2 (1 - p_y)) = \tfrac12\,\mathrm{softmax}(\mathbf{z}_{\setminus y})_j` for
:math:`j \neq y`. The direction is computed as a softmax over the non-target logits, never as
:math:`\nabla L_\mathrm{MAE} / w_\mathrm{MAE}`, so there is no 0/0 when :math:`p_y \to 0` or
:math:`p_y \to 1` (not even at :math:`p_y = 1` exactly in floating point). The IMAE gradient is not the
gradient of any loss with MAE's value, so it is a custom :class:`torch.autograd.Function`; it is
differentiable once (no double backward).

:func:`sample_weight` gives the implicit weights of CCE (Eq. 19), MAE (Eq. 20) and IMAE (Eq. 21);
with :math:`p \sim U[0, 1]` their variances (Eqs. 23-24) are the paper's 0.0889 (MAE) and, for
T = 16, 8, 4, 2, 1, 0.5, 0, the 354.113, 4.546, 0.299, 0.040, 0.007, 0.002, 0 of its Table 4.

Defaults: ``T = 8`` on noisy training data, ``T = 0.5`` on clean data (Sec. 5).

Caveat, measured: since :math:`w_\mathrm{IMAE} \ge 1`, every sample keeps a gradient of L1 norm at
least 1 however well it is fit (CCE's and MAE's vanish as :math:`p_y \to 1`), so nothing stops the
logits from growing. The paper trains ResNets with batch normalisation; on a plain MLP or LeNet-5
with SGD (lr 0.1 or 0.01, momentum 0.9, weight decay 5e-4) the logits of our runs grew past 1e3
within a few epochs and training collapsed to chance accuracy, with T = 8 and with T = 0.5
(scikit-learn digits; see the project README). In the paper's Caffe implementation the ratio
:math:`w_\mathrm{IMAE}/w_\mathrm{MAE}` probably vanished once :math:`p_y` rounded to 1 in float32;
here the direction is exact, as the equations ask, so the push never stops.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from curriculoss._checks import check_logits_target, check_number, check_reduction, reduce

__all__ = ["imae", "IMAE", "sample_weight"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_LOG2 = math.log(2.0)


# The largest weight is exp(T / 4) (p_y (1 - p_y) <= 1/4), computed in float32 for float32 and half
# logits: past T = 4 log(3.4e38) = 355 it is inf and the gradients inf/NaN. T <= 300 keeps it below
# exp(75) = 3.7e32, with room for an upstream gradient scale (e.g. AMP's loss scaling) of 1e6. The
# paper's T are at most 16. (float16 gradients overflow at exp(T/4) > 65504, T > 44, times upstream.)
_T_MAX = 300.0


def _check_T(T: float) -> float:
    return check_number("T", T, low=0.0, high=_T_MAX)


class _IMAEFunction(torch.autograd.Function):
    """(logits (B, C), target (B, 1) int64, T, reduction) -> the reduced MAE.

    The reduction is done here rather than by a separate autograd node, and every step uses few, small
    operations: at LeNet-5 sizes each costs microseconds, so their count is the cost of IMAE.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, T: float, reduction: str):  # type: ignore[override]
        x = logits.float() if logits.dtype in _LOW_PRECISION else logits
        # expm1(log p_y) = p_y - 1, accurate as p_y -> 1 where 1 - p_y would cancel
        py_minus_1 = torch.expm1(torch.log_softmax(x, dim=1).gather(1, target))
        ctx.save_for_backward(x, target, py_minus_1)
        ctx.T, ctx.reduction, ctx.input_dtype = T, reduction, logits.dtype
        loss = py_minus_1.squeeze(1)
        if reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
        return loss.mul(-2.0).to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        x, t, em = ctx.saved_tensors  # em = p_y - 1
        g = grad_loss.to(x.dtype)
        # w_IMAE / 2 = exp(T p_y (1 - p_y) - log 2), with p_y (1 - p_y) = -(em + em^2); 'mean' adds -log B
        shift = _LOG2 + (math.log(x.shape[0]) if ctx.reduction == "mean" and x.shape[0] > 0 else 0.0)
        half_w = torch.addcmul(em, em, em).mul_(-ctx.T).sub_(shift).exp_()
        half_w.mul_(g.unsqueeze(1) if ctx.reduction == "none" else g)
        # Direction: for j != y, (p_j / (1 - p_y)) / 2 = softmax over the non-target logits / 2, finite
        # even when p_y == 1 in floating point; the target's slot (excluded with the lowest float) is -1/2.
        q = torch.softmax(x.scatter(1, t, torch.finfo(x.dtype).min), dim=1).scatter_(1, t, -1.0)
        return q.mul_(half_w).to(ctx.input_dtype), None, None, None


def _imae(logits: Tensor, target: Tensor, T: float, reduction: str) -> Tensor:
    target = check_logits_target(logits, target, min_classes=2)
    return _IMAEFunction.apply(logits, target.unsqueeze(1), T, reduction)


def imae(logits: Tensor, target: Tensor, T: float = 8.0, reduction: str = "mean") -> Tensor:
    r"""IMAE: the MAE value :math:`2 (1 - p_y)` (Eq. 11) with the gradient of Eq. (22).

    The gradient w.r.t. ``logits`` of each sample's loss has MAE's direction (Eq. 18) and L1 norm
    :math:`\exp(T p_y (1 - p_y))` (Eq. 21), times the upstream gradient (``'mean'`` divides it by B).

    Args:
        logits: unnormalised scores, shape (B, C) with C >= 2, floating point; float16/bfloat16 are
            computed in float32, and the loss and gradient come back in the input dtype.
        target: class indices in [0, C), shape (B,), integer.
        T: scale of the exponential weight, >= 0. The paper uses ``T = 8`` on noisy training data
            (the default) and ``T = 0.5`` on clean data (Sec. 5). ``T = 0`` weights every sample by 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Returns:
        The MAE value, shape (B,) for ``'none'``, else a scalar, in the dtype of ``logits``.

    Examples::

        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> imae(z, torch.tensor([1, 0, 4, 9]), T=8.0).backward()
    """
    T = _check_T(T)
    check_reduction(reduction)
    return _imae(logits, target, T, reduction)


class IMAE(nn.Module):
    """Module form of :func:`imae`; ``T = 8`` (noisy data) by default, 0.5 on clean data (Sec. 5).

    After each forward, ``confidence`` holds the batch's per-sample weights
    :math:`w_\\mathrm{IMAE} = \\exp(T p_y (1 - p_y))` (Eq. 21), detached, shape (B,), float32 (float64 for float64 logits).
    """

    def __init__(self, T: float = 8.0, reduction: str = "mean"):
        super().__init__()
        self.T = _check_T(T)
        check_reduction(reduction)
        self.reduction = reduction
        self.confidence: Tensor | None = None

    def extra_repr(self) -> str:
        return f"T={self.T}, reduction={self.reduction!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = _imae(logits, target, self.T, "none")
        with torch.no_grad():
            # p_y (1 - p_y) = (1 - L/2) L/2 from the MAE value L = 2 (1 - p_y)
            half = loss.detach().to(torch.promote_types(loss.dtype, torch.float32)) * 0.5
            self.confidence = torch.exp(self.T * half * (1.0 - half))
        return reduce(loss, self.reduction)


_WEIGHTS = ("cce", "mae", "imae")


def sample_weight(p: Tensor | float, loss: str = "imae", T: float = 8.0) -> Tensor:
    r"""The implicit weight of a sample, the L1 norm of its loss's gradient w.r.t. the logits.

    - ``'cce'``: :math:`w_\mathrm{CCE} = 2 (1 - p)` (Eq. 19);
    - ``'mae'``: :math:`w_\mathrm{MAE} = 4 p (1 - p)` (Eq. 20);
    - ``'imae'``: :math:`w_\mathrm{IMAE} = \exp(T p (1 - p))` (Eq. 21).

    Args:
        p: the probability of the labelled class, :math:`p(y|\mathbf{x})` in [0, 1]; a tensor of any
            shape, or a number (values are not checked).
        loss: ``'cce'`` | ``'mae'`` | ``'imae'``.
        T: IMAE's scale, >= 0 (used by ``'imae'`` only); default 8 (the paper, noisy data).

    Returns:
        The weights, shaped like ``p`` (a 0-d float tensor for a number).

    Examples::

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
