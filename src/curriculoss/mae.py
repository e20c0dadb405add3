r"""Mean absolute error between the one-hot label and the softmax probabilities.

IMAE paper (Wang et al., *Improving MAE against CCE under Label Noise*), Eq. (11):

$$
L_\mathrm{MAE}(\mathbf{x}_i) = \lVert \mathbf{e}_{y_i} - \mathbf{p}_i \rVert_1 = 2\,(1 - p(y_i|\mathbf{x}_i)),
$$

with $\mathbf{p}_i = \mathrm{softmax}(\mathbf{z}_i)$. MAE is noise-tolerant (Ghosh et al. 2017) but
weights samples by $4 p (1 - p)$ (Eq. 20), too flat to fit noisy data well; see `curriculoss.imae`.

`1 - p_y` is computed as `-expm1(log p_y)`, so the loss and its gradient stay accurate when `p_y -> 1`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from curriculoss.checks import reduce
from curriculoss._loss import Loss, checked_log_prob_target

__all__ = ["mae_loss", "MAELoss"]


def mae_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""MAE loss of Eq. (11) of the IMAE paper: $2 (1 - p_y)$, in [0, 2].

    Args:
        logits: unnormalised scores, shape (B, C), floating point; float16/bfloat16 are computed in float32.
        target: class indices in [0, C), shape (B,), integer.
        reduction: `'none'` | `'mean'` | `'sum'`.

    Returns:
        $2 (1 - p_y)$ per sample (`'none'`, shape (B,)) or its mean or sum, in the dtype of `logits`.

    Examples:
        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> mae_loss(z, torch.tensor([1, 0, 4, 9])).backward()
    """
    loss = -2.0 * torch.expm1(checked_log_prob_target(logits, target, reduction))
    return reduce(loss, reduction).to(logits.dtype)


class MAELoss(Loss):
    """Module form of `mae_loss` (IMAE paper, Eq. 11).

    Args:
        reduction: `'none'` | `'mean'` | `'sum'`.
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """`mae_loss` of `logits` `(B, C)` and `target` `(B,)`, reduced by `reduction`."""
        return mae_loss(logits, target, reduction=self.reduction)
