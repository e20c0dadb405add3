"""Telling a collapsed training run from a finished one.

A run has *diverged* at the first epoch where

- its mean training loss is not finite (NaN or infinite), or
- (classification) its training accuracy on the labels it is trained on (the noisy ones) is back at
  chance after having been clearly above chance earlier.

"Earlier" reads the best quarter of each earlier epoch (`window_accuracies`, the
`train_acc_peak` column): a run that learns for half an epoch and then collapses (SuperLoss at lr 0.1
on LeNet-5 did, in its first epoch) has a first-epoch mean below "clearly above", but its best quarter
is not; it is then caught at the next epoch, whose mean is at chance. A quarter is never compared with
a quarter of the same epoch: early in training the first quarters are at chance and the last are not.

Chance is the accuracy of always predicting the most frequent training label, `c` (1/C for balanced
labels). "At chance" means the epoch's mean accuracy is within 2 % of the remaining range above it,
`acc <= c + 0.02 (1 - c)` (0.118 for 10 balanced classes): a network that collapsed to one class, or
whose weights overflowed, scores at most `c`; one that still learns, even slowly and at 40 % noise,
stays above (measured: slow MAE and IMAE runs at 40 % noise dip to 0.16 and recover). "Clearly above"
means `acc >= c + 0.15 (1 - c)` (0.235) in an earlier epoch, which a network that learns reaches even
at 80 % symmetric noise on 10 classes (about 0.28 on the noisy labels when it predicts the true class).

Only per-epoch figures are read, so the check costs nothing during training.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

__all__ = ["chance_accuracy", "window_accuracies", "find_divergence", "AT_CHANCE", "CLEARLY_ABOVE", "ADVICE"]

#: "at chance": within this share of the range (chance, 1] above chance
AT_CHANCE = 0.02
#: "clearly above chance": at least this share of the range above chance
CLEARLY_ABOVE = 0.15

ADVICE = ("what to try: a lower learning rate (--lr, 3 to 10 times lower: a method that weighs samples up "
          "can take a larger step than plain CE at the same rate), or, for SuperLoss, the normalised step "
          "(--sl-step normalised, the default); rerun with --stop-on-divergence to stop such a run early")


def chance_accuracy(labels: Iterable[int], num_classes: int) -> float:
    """Accuracy of always predicting the most frequent of `labels` (at least `1 / num_classes`)."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return 1.0 / num_classes
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    return max(float(counts.max()) / labels.size, 1.0 / num_classes)


#: fewest samples in a window of `window_accuracies` (the chance accuracy of 10 classes then
#: fluctuates by about 0.02, well inside the gap between "at chance" and "clearly above")
MIN_WINDOW = 256


def window_accuracies(correct: list, sizes: list[int], windows: int = 4) -> tuple[float, float]:
    """Best and last accuracy over up to `windows` consecutive runs of batches of an epoch.

    Fewer windows when the epoch is small, so that each holds at least `MIN_WINDOW` samples
    (one window, the whole epoch, below `2 * MIN_WINDOW`).

    `correct`: the number of correct predictions of each batch (numbers or 0-d tensors, read once here);
    `sizes`: the batches' sizes. Returns `(nan, nan)` for an empty epoch.
    """
    if not sizes:
        return math.nan, math.nan
    values = np.array([float(c) for c in correct], dtype=np.float64)
    sizes_ = np.asarray(sizes, dtype=np.float64)
    count = max(1, min(windows, len(sizes_), int(sizes_.sum() // MIN_WINDOW)))
    parts = [p for p in np.array_split(np.arange(len(sizes_)), count) if len(p)]
    accs = [values[p].sum() / max(sizes_[p].sum(), 1.0) for p in parts]
    return float(max(accs)), float(accs[-1])


def find_divergence(history: list[Mapping[str, float]], chance: float | None,
                    complete: bool = False) -> tuple[int | None, str]:
    """The first epoch (1-based, as in `metrics.csv`) at which the run diverged, and why; `(None, '')`.

    A fall to chance counts when it lasts two consecutive epochs (the epoch returned is the first), or
    when it is the run's last epoch and `complete` is true: a slow learner at 40 % noise can dip to
    chance for one epoch and recover (measured: MAE on rotated digits, epoch 4 of 30), a collapsed
    network does not.

    Args:
        history: one mapping per epoch with `epoch`, `train_loss` and `train_acc_noisy`, and
            optionally `train_acc_peak` (the best quarter of the epoch).
        chance: chance accuracy of the training labels (`chance_accuracy`); `None` for
            regression, where only a non-finite loss counts.
        complete: `history` is the whole run (its last epoch needs no successor to count).
    """
    best = -math.inf
    streak: tuple[int, str] | None = None  # first epoch at chance, and why
    for i, row in enumerate(history):
        loss, mean = float(row["train_loss"]), float(row["train_acc_noisy"])
        epoch = int(row["epoch"])
        if not math.isfinite(loss):
            return epoch, f"the training loss became {loss} in epoch {epoch}"
        if chance is None:
            continue
        if streak is None and best >= chance + CLEARLY_ABOVE * (1.0 - chance) \
                and mean <= chance + AT_CHANCE * (1.0 - chance):
            streak = epoch, (f"training accuracy (on the training labels) fell to chance in epoch {epoch} "
                             f"({mean:.3f}; chance {chance:.3f}) after reaching {best:.3f}")
            if complete and i == len(history) - 1:
                return streak
            continue
        if streak is not None:
            if mean <= chance + AT_CHANCE * (1.0 - chance):
                return streak[0], streak[1] + f", and stayed there in epoch {epoch}"
            streak = None
        best = max(best, _get(row, "train_acc_peak", mean), mean)
    return None, ""


def _get(row: Mapping[str, float], key: str, default: float) -> float:
    value = row.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default
