r"""Generalized cross-entropy (the $L_q$ loss) of Zhang & Sabuncu, *Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels*, NeurIPS 2018:

$$
L_q(\mathbf{x}_i) = \frac{1 - p(y_i|\mathbf{x}_i)^q}{q}, \qquad q \in (0, 1].
$$

It tends to cross-entropy as $q \to 0$ and equals MAE / 2 (Eq. 11 of the IMAE paper) at
$q = 1$. Default `q = 0.7`, the value Zhang & Sabuncu use in their experiments. (Their
truncated variant with pruning is not implemented.)

Computed as `-expm1(q log p_y) / q`: accurate when `p_y -> 1` and finite when `p_y -> 0`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from curriculoss.checks import check_number, reduce
from curriculoss._loss import Loss, checked_log_prob_target

__all__ = ["gce_loss", "GCELoss"]


def _check_q(q: float) -> float:
    return check_number("q", q, low=0.0, high=1.0, low_open=True)


def gce_loss(logits: Tensor, target: Tensor, q: float = 0.7, reduction: str = "mean") -> Tensor:
    r"""Generalized cross-entropy $(1 - p_y^q) / q$ (Zhang & Sabuncu 2018), in [0, 1/q].

    Args:
        logits: unnormalised scores, shape (B, C), floating point; float16/bfloat16 are computed in float32.
        target: class indices in [0, C), shape (B,), integer.
        q: exponent in (0, 1]; default 0.7 (Zhang & Sabuncu 2018).
        reduction: `'none'` | `'mean'` | `'sum'`.

    Returns:
        $(1 - p_y^q) / q$ per sample for `'none'` (shape (B,)), else its mean or sum; in the dtype
        of `logits`.

    Examples:
        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> gce_loss(z, torch.tensor([1, 0, 4, 9]), q=0.7).backward()
    """
    q = _check_q(q)
    loss = torch.expm1(q * checked_log_prob_target(logits, target, reduction)) * (-1.0 / q)
    return reduce(loss, reduction).to(logits.dtype)


class GCELoss(Loss):
    """Module form of `gce_loss` (Zhang & Sabuncu 2018), `q = 0.7` by default.

    Args:
        q: exponent in (0, 1].
        reduction: `'none'` | `'mean'` | `'sum'`.
    """

    _settings = ("q", "reduction")

    def __init__(self, q: float = 0.7, reduction: str = "mean"):
        q = _check_q(q)
        super().__init__(reduction)
        self.q = q

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """`gce_loss` of `logits` `(B, C)` and `target` `(B,)` with this module's `q` and `reduction`."""
        return gce_loss(logits, target, q=self.q, reduction=self.reduction)
