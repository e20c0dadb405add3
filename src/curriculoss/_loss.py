"""The base of the library's loss Modules, as torch's `nn.modules.loss._Loss` is of torch's.

A loss Module holds its configuration, checked once in the constructor, and its `forward` calls the
loss's one functional form with it. The base holds what they all share: `reduction` (`'none'` |
`'mean'` | `'sum'`, checked here) and an `extra_repr` that shows the settings a subclass lists.
The functional forms of the losses of `p_y` alone (MAE, GCE, SCE, focal) start from
`log_prob_target`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from curriculoss.checks import check_logits_target, check_reduction, compute_dtype


class Loss(nn.Module):
    """A loss Module: `reduction`, checked once, and an `extra_repr` of the settings in `_settings`.

    Args:
        reduction: `'none'` | `'mean'` | `'sum'`.
    """

    #: The attributes `extra_repr` shows, in this order.
    _settings: tuple[str, ...] = ("reduction",)

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={self._shown(name)}" for name in self._settings)

    def _shown(self, name: str) -> str:
        """How `extra_repr` shows the setting `name`: its `repr`."""
        return repr(getattr(self, name))


def log_prob_target(logits: Tensor, target: Tensor) -> Tensor:
    """`log p_y` per sample from `(B, C)` logits (in the compute dtype) and int64 targets."""
    return torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)


def checked_log_prob_target(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    """`log p_y` per sample, in float32 for half-precision logits, after checking `reduction`,
    `logits` `(B, C)` and `target` `(B,)`: the common start of the losses of `p_y` alone."""
    check_reduction(reduction)
    target = check_logits_target(logits, target)
    return log_prob_target(compute_dtype(logits), target)
