r"""Focal loss of Lin et al., *Focal Loss for Dense Object Detection* (RetinaNet), ICCV 2017, Eq. (5),
in its multi-class softmax form:

$$
\mathrm{FL}(p_t) = -\alpha_t\,(1 - p_t)^\gamma \log p_t,
$$

with $p_t = \mathrm{softmax}(\mathbf{z})_y$. `gamma = 2` by default (the paper's choice);
`gamma = 0` with no `alpha` is cross-entropy. `alpha` is `None` ($\alpha_t = 1$), a float
(the same factor for every sample) or a per-class tensor of shape (C,) ($\alpha_t = \alpha_y$).
The paper's binary alpha-balance (0.25 for foreground, 0.75 for background) is the per-class tensor
`[0.75, 0.25, ..., 0.25]` when class 0 is the background.

Only $\log p_t$ of each row is kept from the (N, C) logits (`log_softmax` then `gather`), so
200,000 anchors x 80 classes cost one softmax pass forward and one backward. `1 - p_t` is computed as
`-expm1(log p_t)`: accurate when `p_t -> 1`; it is floored at the smallest normal float so that
`gamma < 1` has a finite gradient at `p_t = 1`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from curriculoss.checks import (check_class_weights, check_logits_target, check_number, check_reduction,
                                 compute_dtype, reduce)
from curriculoss._loss import Loss, log_prob_target

__all__ = ["focal_loss", "FocalLoss"]


def _check_alpha(alpha: Tensor | float | None, num_classes: int | None = None) -> Tensor | float | None:
    if alpha is None:
        return None
    if isinstance(alpha, Tensor):
        check_class_weights("alpha", alpha, num_classes)
        return alpha
    return check_number("alpha", alpha, low=0.0)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: Tensor | float | None = None,
               reduction: str = "mean") -> Tensor:
    r"""Focal loss $-\alpha_t (1 - p_t)^\gamma \log p_t$ (Lin et al. 2017, Eq. 5), softmax form.

    Args:
        logits: unnormalised scores, shape (N, C), floating point (e.g. anchors x classes);
            float16/bfloat16 are computed in float32.
        target: class indices in [0, C), shape (N,), integer.
        gamma: focusing parameter, >= 0; default 2.0 (Lin et al. 2017).
        alpha: `None` (no balancing), a float >= 0 (one factor for all samples), or a floating tensor of
            shape (C,) of per-class factors on the device of `logits`.
        reduction: `'none'` | `'mean'` (over the N samples) | `'sum'`. RetinaNet normalises the sum
            by the number of foreground anchors: use `'sum'` and divide.

    Returns:
        The loss, shape (N,) for `'none'`, else a scalar, in the dtype of `logits`.

    Examples:
        >>> z = torch.randn(6, 80, requires_grad=True)
        >>> focal_loss(z, torch.randint(0, 80, (6,)), gamma=2.0).backward()
    """
    gamma = check_number("gamma", gamma, low=0.0)
    check_reduction(reduction)
    target = check_logits_target(logits, target)
    alpha = _check_alpha(alpha, logits.shape[1])
    if isinstance(alpha, Tensor) and alpha.device != logits.device:
        raise ValueError(f"alpha must be on the device of logits ({logits.device}), got {alpha.device}")
    x = compute_dtype(logits)
    log_pt = log_prob_target(x, target)
    if gamma == 0.0:
        loss = -log_pt
    else:
        one_minus_pt = torch.expm1(log_pt).neg().clamp_min(torch.finfo(x.dtype).tiny)
        loss = one_minus_pt.pow(gamma) * log_pt.neg()
    if isinstance(alpha, Tensor):
        loss = loss * alpha.to(x.dtype).gather(0, target)
    elif alpha is not None:
        loss = loss * alpha
    return reduce(loss, reduction).to(logits.dtype)


class FocalLoss(Loss):
    """Module form of `focal_loss` (Lin et al. 2017). A per-class `alpha` is a buffer.

    Args:
        gamma: focusing parameter, >= 0.
        alpha: `None`, a float >= 0, or a floating tensor of shape (C,) of per-class factors.
        reduction: `'none'` | `'mean'` | `'sum'`.
    """

    alpha: Tensor | None
    _settings = ("gamma", "alpha", "reduction")

    def __init__(self, gamma: float = 2.0, alpha: Tensor | float | None = None, reduction: str = "mean"):
        gamma = check_number("gamma", gamma, low=0.0)
        alpha = _check_alpha(alpha)
        super().__init__(reduction)
        self.gamma = gamma
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha.detach().clone())
        else:
            self.alpha = alpha

    def _shown(self, name: str) -> str:
        if name == "alpha" and isinstance(self.alpha, Tensor):
            return f"tensor of shape {tuple(self.alpha.shape)}"
        return super()._shown(name)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """`focal_loss` of `logits` `(N, C)` and `target` `(N,)` with this module's `gamma`, `alpha` and
        `reduction`."""
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction)
