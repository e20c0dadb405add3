r"""Symmetric cross-entropy of Wang et al., *Symmetric Cross Entropy for Robust Learning with Noisy
Labels*, ICCV 2019 (Sec. 3):

$$
L_\mathrm{SL} = \alpha\,L_\mathrm{CE} + \beta\,L_\mathrm{RCE}, \qquad
L_\mathrm{CE} = -\log p_y, \qquad
L_\mathrm{RCE} = -\sum_k p_k \log q_k = -A\,(1 - p_y),
$$

where $q$ is the one-hot label and $\log 0$ is replaced by the constant $A$, so the
reverse cross-entropy is $-A$ times (MAE / 2). The paper sets $A = -4$ for every experiment.

Defaults: `alpha = 0.1, beta = 1.0`, the paper's CIFAR-10 setting. Its other settings: MNIST
`alpha = 0.01, beta = 1.0`; CIFAR-100 `alpha = 6.0, beta = 0.1`. (The authors' released code clips
the label at 1e-4 instead, i.e. `A = log 1e-4 ~ -9.21`; pass `A=math.log(1e-4)` to match it.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from curriculoss.checks import check_number, reduce
from curriculoss._loss import Loss, checked_log_prob_target

__all__ = ["sce_loss", "SCELoss"]


def _check_hyper(alpha: float, beta: float, A: float) -> tuple[float, float, float]:
    return (check_number("alpha", alpha, low=0.0), check_number("beta", beta, low=0.0),
            check_number("A", A, high=0.0, high_open=True))


def sce_loss(logits: Tensor, target: Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0,
             reduction: str = "mean") -> Tensor:
    r"""Symmetric cross-entropy $-\alpha \log p_y - \beta A (1 - p_y)$ (Wang et al. 2019).

    Args:
        logits: unnormalised scores, shape (B, C), floating point; float16/bfloat16 are computed in float32.
        target: class indices in [0, C), shape (B,), integer.
        alpha: weight of cross-entropy, >= 0; default 0.1 (CIFAR-10 in the paper).
        beta: weight of reverse cross-entropy, >= 0; default 1.0 (CIFAR-10 in the paper).
        A: the value that replaces `log 0` in the reverse cross-entropy, < 0; default -4 (the paper).
        reduction: `'none'` | `'mean'` | `'sum'`.

    Returns:
        $-\alpha \log p_y - \beta A (1 - p_y)$ per sample (`'none'`, shape (B,)), or reduced to a
        scalar; in the dtype of `logits`.

    Examples:
        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> sce_loss(z, torch.tensor([1, 0, 4, 9]), alpha=0.1, beta=1.0).backward()
    """
    alpha, beta, A = _check_hyper(alpha, beta, A)
    log_p = checked_log_prob_target(logits, target, reduction)
    loss = (-alpha) * log_p + (beta * A) * torch.expm1(log_p)  # -A (1 - p) = A expm1(log p)
    return reduce(loss, reduction).to(logits.dtype)


class SCELoss(Loss):
    """Module form of `sce_loss` (Wang et al. 2019); defaults are the paper's CIFAR-10 setting.

    Args:
        alpha: weight of cross-entropy, >= 0.
        beta: weight of reverse cross-entropy, >= 0.
        A: the value that replaces `log 0`, < 0.
        reduction: `'none'` | `'mean'` | `'sum'`.
    """

    _settings = ("alpha", "beta", "A", "reduction")

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0, reduction: str = "mean"):
        alpha, beta, A = _check_hyper(alpha, beta, A)
        super().__init__(reduction)
        self.alpha, self.beta, self.A = alpha, beta, A

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """`sce_loss` of `logits` `(B, C)` and `target` `(B,)` with this module's `alpha`, `beta`, `A` and
        `reduction`."""
        return sce_loss(logits, target, alpha=self.alpha, beta=self.beta, A=self.A, reduction=self.reduction)
