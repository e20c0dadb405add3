r"""SuperLoss for metric learning: the contrastive loss of SuperLoss Eq. 5.

Pairs $(x_i, x_j, y_{ij})$ are positive ($y_{ij} = 1$) or negative ($y_{ij} = 0$); with
$d = \|f(x_i) - f(x_j)\|$, the contrastive loss (Hadsell et al. 2006, as written in Sec. 2.4 of the
SuperLoss paper, null margin for positives) is

$$
\ell_+ = [d]_+ ,\qquad \ell_- = [m - d]_+ ,
$$

and the SuperLoss goes on top of each with its own threshold, $\tau_+$ and $\tau_-$, and a
shared $\lambda$ (Eq. 5). `squared=True` uses $d^2$ and $[m-d]_+^2$ instead, the
form of Radenović et al. that retrieval code often uses.

The same wrapper works for a triplet loss: there is one loss per triplet, so a plain
`SuperLoss` (no smoothing) on `F.triplet_margin_loss(a, p, n, reduction='none')`
is the SuperLoss triplet loss.

float16 and bfloat16 embeddings are computed in float32 (distances near the margin and the SuperLoss
cap need it) and the results returned in the embeddings' dtype.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

from curriculoss.checks import LOW_PRECISION, check_reduction, reduce
from curriculoss.superloss import SuperLoss

__all__ = ["contrastive_loss", "SuperContrastiveLoss"]


def _check_pairs(x1: Tensor, x2: Tensor, label: Tensor) -> None:
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor) or not x1.is_floating_point() or not x2.is_floating_point():
        raise TypeError("x1 and x2 must be floating-point tensors of embeddings")
    if x1.dim() != 2 or x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must both be (pairs, dim), got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if not isinstance(label, Tensor) or label.shape != x1.shape[:1]:
        raise ValueError(f"label must be a tensor of shape ({x1.shape[0]},) with 1 for positive and 0 for negative pairs, "
                         f"got {getattr(label, 'shape', type(label).__name__)}")
    if label.is_floating_point() or label.is_complex():
        raise TypeError(f"label must be a bool or integer tensor (1 positive, 0 negative), got {label.dtype}")


def _check_margin(margin: float) -> None:
    if isinstance(margin, bool) or not isinstance(margin, Real) or not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")


def _pair_losses(x1: Tensor, x2: Tensor, margin: float, squared: bool) -> tuple[Tensor, Tensor]:
    d = torch.linalg.vector_norm(x1 - x2, dim=1)
    pos, neg = d, torch.clamp(margin - d, min=0)
    return (pos * pos, neg * neg) if squared else (pos, neg)


def contrastive_loss(x1: Tensor, x2: Tensor, label: Tensor, margin: float = 0.7, squared: bool = False,
                     reduction: str = "mean") -> Tensor:
    r"""Contrastive loss per pair: $[d]_+$ for positive pairs, $[m - d]_+$ for negative ones.

    Args:
        x1: embeddings of the first side of each pair, `(P, D)`.
        x2: embeddings of the second side of each pair, `(P, D)`.
        label: `(P,)` bool or integer, 1 (True) for positive pairs, 0 for negative ones.
        margin: $m > 0$ (0.7 is the retrieval default of Radenović et al. for GeM embeddings).
        squared: square both terms.
        reduction: `'none'` | `'mean'` | `'sum'`.
    """
    _check_pairs(x1, x2, label)
    _check_margin(margin)
    check_reduction(reduction)
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    if dtype in LOW_PRECISION:
        return contrastive_loss(x1.float(), x2.float(), label, margin, squared, reduction).to(dtype)
    pos, neg = _pair_losses(x1, x2, margin, squared)
    return reduce(torch.where(label.bool(), pos, neg), reduction)


class SuperContrastiveLoss(nn.Module):
    r"""SuperLoss on the contrastive loss (Eq. 5): two thresholds, $\tau_+$ and $\tau_-$,
    kept apart, and one $\lambda$.

    Args:
        margin: $m > 0$ of the negative term.
        lam: $\lambda > 0$, shared by both terms.
        tau: `'avg'` (the paper's choice for retrieval, Sec. 3.4), `'ema'`, a number, or a pair
            `(tau_pos, tau_neg)` of those; each threshold is estimated from its own pairs only.
        momentum: $\alpha$ of the `'ema'` thresholds.
        squared: square both terms.
        reduction: `'none'` | `'mean'` | `'sum'` over all pairs.
        step: `'normalised'` (default) or `'paper'`, as in `SuperLoss`; each
            threshold's pairs are normalised by their own mean $\sigma^*$.

    `forward(x1, x2, label)` with embeddings `(P, D)` and pair labels `(P,)`. There is no per-pair
    state beyond the two thresholds (pairs are too many to remember, Sec. 2.4). After each forward,
    `.confidence` holds each pair's $\sigma^*$, and `.positive` / `.negative` are the two
    `SuperLoss` modules (their `.tau` is $\tau_\pm$).

    Examples:
        >>> criterion = SuperContrastiveLoss(margin=1.0, lam=1.0, tau="avg")
        >>> a, b = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8)
        >>> criterion(a, b, torch.randint(0, 2, (16,))).backward()
    """

    confidence: Tensor | None

    def __init__(self, margin: float = 0.7, lam: float = 1.0, tau: str | float | tuple = "avg",
                 momentum: float = 0.9, squared: bool = False, reduction: str = "mean", *,
                 step: str = "normalised"):
        super().__init__()
        _check_margin(margin)
        check_reduction(reduction)
        tau_pos, tau_neg = tau if isinstance(tau, tuple) else (tau, tau)
        self.margin = float(margin)
        self.squared = squared
        self.reduction = reduction
        self.positive = SuperLoss(tau=tau_pos, lam=lam, momentum=momentum, reduction="none", step=step)
        self.negative = SuperLoss(tau=tau_neg, lam=lam, momentum=momentum, reduction="none", step=step)
        self.confidence = None

    def forward(self, x1: Tensor, x2: Tensor, label: Tensor) -> Tensor:
        """The SuperLoss of the contrastive losses of the pairs `(x1, x2)`, embeddings `(P, D)`, whose
        `label` `(P,)` is 1 (True) for positive pairs and 0 for negative ones (as in `contrastive_loss`),
        reduced by `reduction`; sets `confidence`."""
        _check_pairs(x1, x2, label)
        dtype = torch.promote_types(x1.dtype, x2.dtype)
        if dtype in LOW_PRECISION:
            out = self.forward(x1.float(), x2.float(), label)
            self.confidence = self.confidence.to(dtype)
            return out.to(dtype)
        is_pos = label.bool()
        pos, neg = _pair_losses(x1, x2, self.margin, self.squared)
        sl_pos = self.positive(pos, mask=~is_pos)
        sl_neg = self.negative(neg, mask=is_pos)
        loss = torch.where(is_pos, sl_pos, sl_neg)
        self.confidence = torch.where(is_pos, self.positive.confidence, self.negative.confidence)
        return reduce(loss, self.reduction)
