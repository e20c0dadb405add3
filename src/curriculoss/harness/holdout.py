"""Selecting the epoch on a noisy hold-out split of the training set (`TrainConfig.holdout`).

Under heavy label noise a run's last epoch can be far below its best, and a practitioner has no clean
labels to find the best one with. What they have is a share of the training set, with the same label
noise, kept out of training: under symmetric noise, the accuracy against noisy labels ranks the
epochs as the accuracy against the true labels does.

With `holdout = f > 0`:

- the noise is drawn first, on the whole training set, exactly as without a hold-out: the samples
  trained on keep the noisy labels a run without `holdout` gives them;
- then `round(f * n)` of the `n` training samples are held out, the first ones of the permutation
  `numpy.random.default_rng(seed).permutation(n)` (`split_positions`, which
  `curriculoss.harness.reproduce.validation_split` uses too); they keep their noisy labels and are
  never trained on. At least one sample must be held out and one left (else `ValueError`);
- the training part keeps the original order of its samples, indexed `0 .. n_train - 1` by
  everything per sample (signals, SuperLoss's thresholds, the data parameters); the images'
  standardisation statistics stay those of the whole training set (they use no label);
- each epoch, after the test set, the model is scored on the held-out samples against their noisy
  labels, with the test set's metric (accuracy, or MAE for regression): `metrics.csv`'s
  `holdout_metric`;
- `results.json` reports `selected`, the test metric of the epoch with the best `holdout_metric`
  (the first on ties), and `selected_epoch` (1-based), `holdout` and `holdout_size`, beside `best`
  and `final`, never instead; the held-out positions in the training set are `holdout_index.npy`.

The split is recomputed from the seed, so a resumed run holds out the same samples. A streamed
image folder is not supported (`--stream no` reads it into memory). Under `torchrun` every rank scores
the whole hold-out split, as it does the test set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curriculoss import noise
from curriculoss.harness.data.imagefolder import ImageFiles
from curriculoss.harness.runfolder import HOLDOUT_FILE, atomic_write

__all__ = ["Holdout", "split_positions", "holdout_positions", "check_holdout", "split_holdout", "selected_epoch",
           "write_holdout_index"]

#: The error for a streamed image folder.
_STREAMED = "--holdout is not supported with a streamed image folder; use --stream no"


@dataclass(eq=False)
class Holdout:
    """The held-out samples: their positions in the training set, inputs and noisy labels (numpy
    arrays, or tensors on the run's device once `to` moved them there)."""

    index: np.ndarray
    x: Any
    y: Any
    fraction: float

    def to(self, device: torch.device, regression: bool) -> "Holdout":
        """The same samples as tensors on `device` (the targets in the training targets' dtype)."""
        dtype = torch.float32 if regression else torch.int64
        return replace(self, x=torch.from_numpy(np.ascontiguousarray(self.x)).to(device),
                       y=torch.from_numpy(np.asarray(self.y)).to(device, dtype))

    def __len__(self) -> int:
        return len(self.index)


def split_positions(n: int, fraction: float, seed: int, name: str = "holdout") -> tuple[np.ndarray, np.ndarray]:
    """The positions kept and the held-out ones of `n` samples, in the order of
    `numpy.random.default_rng(seed).permutation(n)`, whose first `round(fraction * n)` are held out
    (`name`: the argument `fraction` is, for the error)."""
    size = round(fraction * n)
    if not 0 < size < n:
        raise ValueError(f"{name} {fraction:g} of {n} training samples holds out {size}; it must hold out at "
                         f"least 1 and leave at least 1 to train on (a fraction in [{1 / n:.3g}, {1 - 1 / n:.3g}])")
    order = np.random.default_rng(seed).permutation(n)
    return order[size:], order[:size]


def holdout_positions(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions trained on and the held-out ones of a training set of `n` samples (`split_positions`),
    each sorted: the training part keeps the original order of its samples."""
    fit, held = split_positions(n, fraction, seed)
    return np.sort(fit), np.sort(held)


def check_holdout(cfg, data) -> tuple[np.ndarray, np.ndarray]:
    """The positions trained on and held out (`holdout_positions`); refuses a hold-out the data set
    cannot give (streamed, or too few samples), before anything is written."""
    if isinstance(data.x_train, ImageFiles):
        raise ValueError(_STREAMED)
    return holdout_positions(len(data.y_train), cfg.holdout, cfg.seed)


def split_holdout(cfg, data, noisy: noise.NoisyLabels):
    """The training part of `data` and of its noisy labels `noisy` (drawn on the whole training set),
    and the held-out part (`Holdout`, numpy arrays), for `cfg.holdout > 0`."""
    fit, held = check_holdout(cfg, data)
    labels, mask = np.asarray(noisy.labels), np.asarray(noisy.mask)
    part = replace(data, x_train=data.x_train[fit], y_train=np.asarray(data.y_train)[fit])
    return part, noise.NoisyLabels(labels[fit], mask[fit]), Holdout(held, data.x_train[held], labels[held],
                                                                      float(cfg.holdout))


def selected_epoch(history: list[dict[str, float]], holdout: Holdout, regression: bool) -> dict[str, Any]:
    """The results of the selection: the test metric of the epoch whose `holdout_metric` is best
    (highest accuracy, lowest MAE; the first on ties; a NaN never wins), that epoch, the fraction and
    the hold-out's size."""
    scores = [-r["holdout_metric"] if regression else r["holdout_metric"] for r in history]
    scores = [-math.inf if math.isnan(s) else s for s in scores]
    row = history[scores.index(max(scores))]
    return {"selected": row["test_metric"], "selected_epoch": int(row["epoch"]), "holdout": holdout.fraction,
            "holdout_size": len(holdout)}


def write_holdout_index(run_dir: Path, holdout: Holdout) -> None:
    """`holdout_index.npy`: the held-out positions in the training set (int64), written atomically."""
    atomic_write(Path(run_dir) / HOLDOUT_FILE, lambda fh: np.save(fh, np.asarray(holdout.index, np.int64)))
