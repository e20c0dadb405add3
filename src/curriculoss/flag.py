"""Find the mislabelled samples from one training run (numpy in, numpy out, cleanlab's conventions).

A run leaves per-sample, per-epoch signals behind (`signals.npz`, written by
`curriculoss.recorder.Recorder` in `curriculoss train` or in any training loop): the loss, the
method's confidence (SuperLoss sigma*, Fig. 5; the instance data parameters, Data Parameters Fig. 4)
and the margin `z_y - max_{i != y} z_i`. This module turns them into label-quality scores in
[0, 1], lower = more likely mislabelled, estimates how many labels are wrong, picks the suspects, and
measures the ranking against a known noise mask.

The default score is the Area Under the Margin (AUM; Pleiss et al., NeurIPS 2020, Eq. 2), the mean
margin of each sample over the epochs, taken over the *early-learning window* (`select_epochs`):
the first epochs, up to the point where the mean margins split best into two groups. A network learns
the clean samples first and memorises the wrong labels later (the later, the longer the schedule);
averaged over every epoch of a long run, the memorised epochs drown the early ones (digits, MLP, 40 %
symmetric noise, 200 epochs: AUROC 0.92 over all epochs, 0.79 over the last half, 0.998 over the
selected window). The number of wrong labels is the number of samples with a negative AUM over that
window: those the network, while it learnt, kept assigning to another class.

Signals are arrays of shape `(epochs, N)` or `(N,)`, or the `curriculoss.signals.Table`s of a
signals folder; NaN entries (a sample not seen in an epoch) are skipped when averaging. Tables are
read in blocks of samples (`block_columns`), every epoch of a block at once, so memory is `O(N)`
for the per-sample results plus one block, whatever the number of epochs; the results do not depend on
the block size.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["BLOCK_BYTES", "block_columns", "SCORE_METHODS", "SIGNAL_OF", "DEFAULT_WINDOW", "DEFAULT_SCORE", "default_score",
           "label_quality_scores", "run_window", "run_scores",
           "select_epochs", "find_label_issues", "estimate_num_issues", "evaluate"]

#: How each kind of signal becomes a score in [0, 1] (lower = more suspicious).
SCORE_METHODS = {
    "aum": "sigmoid(AUM), AUM the mean margin z_y - max_{i != y} z_i over the early-learning epochs (Pleiss et al. 2020)",
    "loss": "exp(-mean loss): for cross-entropy the geometric mean of p_y over the epochs averaged",
    "superloss": "mean sigma* / e (sigma* <= e), the SuperLoss confidence",
    "data-params": "exp(-mean sigma*_i), the data parameter of each sample (noisy samples grow large ones)",
    "imae": "exp(-mean MAE loss) from an IMAE run's loss signal",
}

#: The `signals.npz` table each score reads.
SIGNAL_OF = {"aum": "margin", "loss": "loss", "superloss": "confidence", "data-params": "confidence", "imae": "loss"}

#: The default window of each score (`window` of `label_quality_scores`).
DEFAULT_WINDOW = {"aum": "auto", "loss": 0.5, "superloss": 0.5, "data-params": 0.5, "imae": 0.5}

#: The default score for a run of any training method: the early-learning AUM ranked best on digits and
#: MNIST at 15-200 epochs and 20-40 % noise for cross-entropy, SuperLoss, data-parameter and IMAE runs
#: alike, also where the method's own confidence is recorded (docs/flagging.md).
DEFAULT_SCORE = "aum"


def default_score(method: str | None = None) -> str:
    """The default score for a run trained with `method` (any method: `DEFAULT_SCORE`)."""
    return DEFAULT_SCORE


#: Bytes of float64 a block of a table may take when it is read (`block_columns`).
BLOCK_BYTES = 64 << 20


def block_columns(num_samples: int, rows: int) -> list[slice]:
    """The blocks of samples in which a table of `rows` epochs is read: each under `BLOCK_BYTES` as float64."""
    width = max(1, BLOCK_BYTES // (8 * max(rows, 1)))
    return [slice(a, min(a + width, num_samples)) for a in range(0, num_samples, width)]


def _as_signal(signals, name: str = "signals"):
    """`signals` as an `(epochs, N)` table: an array (its dtype kept), or a table read in blocks."""
    arr = signals if _is_table(signals) else np.asarray(signals)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (epochs, N) or (N,), got {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: no samples")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: no epochs")
    if not _is_table(arr) and arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _is_table(signals) -> bool:
    """A table read in blocks (a `curriculoss.signals.Table`): not an array, but shaped and sliceable."""
    return not isinstance(signals, np.ndarray) and getattr(signals, "ndim", None) == 2 and hasattr(signals, "shape")


def _nanmean(table, rows: slice = slice(None)) -> np.ndarray:
    """The mean over `rows` (epochs) of each column of `table`, NaN skipped; read block by block."""
    epochs = len(range(table.shape[0])[rows])
    out = np.empty(table.shape[1])
    for columns in block_columns(table.shape[1], epochs):
        block = np.asarray(table[rows, columns], dtype=np.float64)
        finite = np.isfinite(block)
        counts = finite.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[columns] = np.where(finite, block, 0.0).sum(0) / np.where(counts > 0, counts, np.nan)
    return out


def _any_finite(table) -> bool:
    """Whether `table` holds a finite value (read until the first block that has one)."""
    return any(np.isfinite(np.asarray(table[:, columns], dtype=np.float64)).any()
               for columns in block_columns(table.shape[1], table.shape[0]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def _between(s: np.ndarray) -> np.ndarray:
    """Otsu's between-group variance, times `n^2`, of every split of the sorted `s` into its `k` lowest values
    and the rest (`k = 1 .. n - 1`): `k (n - k) (mean_high - mean_low)^2` (Otsu 1979)."""
    n = s.size
    cum = np.cumsum(s)
    k = np.arange(1, n)
    return k * (n - k) * ((cum[-1] - cum[:-1]) / (n - k) - cum[:-1] / k) ** 2


def _separability(scores: np.ndarray) -> float:
    """Otsu's effectiveness: the largest between-group variance of a two-group split over the total variance."""
    s = np.sort(scores[np.isfinite(scores)])
    if s.size < 2 or s[0] == s[-1]:
        return 0.0
    return float((_between(s) / s.size ** 2).max() / s.var())


def select_epochs(margin, *, max_samples: int = 100_000) -> int:
    """The early-learning window: how many first epochs the AUM should average.

    Two steps, on the per-epoch margins alone (no noise mask, no held-out data):

    1. the learning phase ends at the first epoch whose number of misfit samples (margin < 0) is at
       least 90 % of the previous epoch's: the easy samples are learnt and the count has stopped
       falling fast (on clean data that is once nearly everything is learnt);
    2. among the windows `[0, e)` at least twice that long (so that a clean sample learnt by the
       end of the learning phase is misfit in at most half the window: its AUM is positive), the
       one whose AUM scores split best into two groups (largest Otsu effectiveness, between-group
       over total variance): long enough to average out the epoch-to-epoch noise, short enough that
       the memorised epochs do not blur the groups.

    Args:
        margin: `(epochs, N)` margins (`signals.npz`'s `margin`).
        max_samples: above this many samples the separability is measured on an evenly spaced subset.

    Returns:
        The number of first epochs, in `[1, epochs]`.
    """
    m = _as_signal(margin, "margin")
    columns = slice(None)
    if m.shape[1] > max_samples:
        columns = np.linspace(0, m.shape[1] - 1, max_samples).astype(np.int64)
    m = np.asarray(m[:, columns], dtype=np.float64)
    epochs = m.shape[0]
    finite = np.isfinite(m)
    with np.errstate(invalid="ignore"):
        misfit = (m < 0).sum(1) / np.maximum(finite.sum(1), 1)
    start = epochs
    for e in range(1, epochs):
        if misfit[e] >= 0.9 * misfit[e - 1]:
            start = e + 1
            break
    start = min(epochs, 2 * start)
    cum = np.cumsum(np.where(finite, m, 0.0), 0)
    seen = np.cumsum(finite, 0)
    best, best_e = -1.0, start
    for e in range(start, epochs + 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            aum = cum[e - 1] / np.where(seen[e - 1] > 0, seen[e - 1], np.nan)
        eta = _separability(_sigmoid(aum))
        if eta > best:
            best, best_e = eta, e
    return best_e


def _window(epochs: int, window, margin, shape: tuple[int, int]) -> slice:
    """The epochs (rows) a window averages."""
    if window is None or window == "all":
        return slice(None)
    if window == "auto":
        if margin is None:
            raise ValueError("window='auto' needs the margins (margin=...) to select the early-learning epochs")
        m = _as_signal(margin, "margin")
        if tuple(m.shape) != tuple(shape):
            raise ValueError(f"margin must have the shape of signals {tuple(shape)}, got {tuple(m.shape)}")
        return slice(0, select_epochs(m))
    if isinstance(window, slice):
        if not len(range(epochs)[window]):
            raise ValueError(f"window {window} selects no epoch of {epochs}")
        return window
    if isinstance(window, bool) or not isinstance(window, (int, float, np.integer, np.floating)):
        raise ValueError(f"window must be 'auto', 'all', None, a count, a fraction or a slice; got {window!r}")
    if isinstance(window, (float, np.floating)):
        if not 0 < window <= 1:
            raise ValueError(f"window as a fraction must be in (0, 1], got {window}")
        window = max(1, int(round(epochs * window)))
    if window < 1:
        raise ValueError(f"window (last_epochs) must be >= 1, got {window}")
    return slice(max(0, epochs - int(window)), None)


_UNSET = object()


def label_quality_scores(signals, *, method: str = "loss", last_epochs=_UNSET, window=_UNSET,
                         margin=None) -> np.ndarray:
    """One score per training sample in [0, 1]; lower = more likely mislabelled.

    Args:
        signals: per-sample signal, `(epochs, N)` or `(N,)`: the margins for `'aum'`, the
            per-sample loss for `'loss'` and `'imae'`, the SuperLoss confidence for
            `'superloss'`, the data parameters for `'data-params'` (`SIGNAL_OF`).
        method: one of `SCORE_METHODS`.
        window: the epochs averaged: `'auto'` (the early-learning window of `select_epochs`,
            from `margin`, or from `signals` themselves for `'aum'`), `'all'` / `None`, a
            count or a fraction of the *last* epochs, or a `slice`. Default: `'auto'` for `'aum'`,
            the last half (0.5) for the others.
        last_epochs: the older name of a count / fraction / `None` window.
        margin: `(epochs, N)` margins, for `window='auto'` with another signal.

    Returns:
        `(N,)` float array in [0, 1]. A sample with no finite signal at all gets NaN.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {', '.join(SCORE_METHODS)}; got {method!r}")
    if last_epochs is not _UNSET and window is not _UNSET:
        raise ValueError("give window or last_epochs, not both")
    arr = _as_signal(signals)
    if window is _UNSET:
        window = last_epochs if last_epochs is not _UNSET else DEFAULT_WINDOW[method]
    if isinstance(window, str) and window == "auto" and margin is None and method == "aum":
        margin = arr
    mean = _nanmean(arr, _window(arr.shape[0], window, margin, arr.shape))
    if method == "aum":
        return _sigmoid(mean)
    if method == "superloss":
        return np.clip(mean / np.e, 0.0, 1.0)
    return np.exp(-np.maximum(mean, 0.0))


def _run_table(signals: Mapping, score: str):
    """The table `score` reads from a run's signals, checked: present, and holding a value."""
    if score not in SCORE_METHODS:
        raise ValueError(f"score must be one of {', '.join(SCORE_METHODS)}; got {score!r}")
    name = SIGNAL_OF[score]
    if name not in signals:
        raise ValueError(f"score {score!r} needs the {name!r} table, which these signals lack (a run recorded "
                         "before curriculoss recorded margins: train again, or pick --score loss)")
    table = _as_signal(signals[name], name)
    if not _any_finite(table):
        raise ValueError(f"score {score!r} needs the {name!r} table, which holds no value in these signals (a run "
                         "of a method that does not record it: pick --score aum or loss)")
    return table


def run_window(signals: Mapping, score: str, window=_UNSET) -> slice:
    """The epochs a run's `score` averages, as a slice of its tables' rows.

    Args:
        signals: as in `run_scores`.
        score: one of `SCORE_METHODS`.
        window: as in `label_quality_scores` (default the score's `DEFAULT_WINDOW`); `'auto'` is the
            early-learning window of the run's margins (`select_epochs`).
    """
    return _run_rows(signals, score, _run_table(signals, score), window)


def _run_rows(signals: Mapping, score: str, table, window) -> slice:
    """`run_window` for the checked `table` of `score`."""
    window = DEFAULT_WINDOW[score] if window is _UNSET else window
    margin = _as_signal(signals["margin"], "margin") if "margin" in signals else None
    if isinstance(window, str) and window == "auto" and (margin is None or not _any_finite(margin)):
        raise ValueError("window 'auto' needs the run's margins, which these signals lack; give a window")
    return _window(table.shape[0], window, margin, table.shape)


def run_scores(signals: Mapping, score: str | None = None, *, method: str | None = None, window=_UNSET) -> tuple[str, np.ndarray]:
    """The scores of a run's signals (a mapping of its arrays).

    Args:
        signals: `curriculoss.signals.open_signals(folder)`, `np.load('signals.npz')` or
            `curriculoss.recorder.Recorder.arrays`.
        score: one of `SCORE_METHODS`; default `default_score` of `method`.
        method: the training method of the run (for the default score).
        window: as in `label_quality_scores` (`'auto'` uses the run's margins; `run_window`).

    Returns:
        `(score name, (N,) scores)`.
    """
    score = score or default_score(method or "ce")
    table = _run_table(signals, score)
    return score, label_quality_scores(table, method=score, window=_run_rows(signals, score, table, window))


def _check_scores(scores, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at {int(np.isnan(arr).sum())} samples (e.g. index "
                         f"{int(np.flatnonzero(np.isnan(arr))[0])}); drop or fill them first")
    return arr


def estimate_num_issues(scores, *, score: str | None = None) -> int:
    """Number of likely label issues, estimated from the scores alone.

    For AUM scores (`score='aum'`) it is the number of negative AUMs (scores below 1/2): the samples
    that the network, over the early-learning window, assigned on average to a class other than their
    label. Pleiss et al. (2020, Sec. 3) calibrate this threshold with fake "threshold samples"; the
    zero margin needs no extra training and measured within 10 % of the true number on digits and
    MNIST at 15-200 epochs (docs/flagging.md).

    For any other score the scores of a noisy training set are a mixture of a high clean mode and a low noisy one. The
    estimate is the number of scores below Otsu's threshold: the split of the sorted scores into a
    low and a high group that maximises the variance between the two groups' means (Otsu 1979). A
    score set with a single mode splits at a small low tail, so clean data gets few issues, not none.
    """
    s = np.sort(_check_scores(scores))
    if score == "aum":
        return int((s < 0.5).sum())
    if s.size < 2 or s[0] == s[-1]:
        return 0
    between = _between(s)
    between[s[1:] == s[:-1]] = -1.0  # never split between equal scores
    return int(np.argmax(between)) + 1  # the size of the low group


def find_label_issues(scores, *, num_issues: int | None = None, threshold: float | None = None,
                      score: str | None = None, return_indices_ranked_by_score: bool = False) -> np.ndarray:
    """The samples most likely mislabelled.

    Args:
        scores: `(N,)` label-quality scores in [0, 1], lower = more suspicious
            (`label_quality_scores`).
        num_issues: flag this many lowest-scoring samples.
        threshold: flag every sample whose score is below this value.
            With neither, the number is estimated by `estimate_num_issues`.
        score: which score the scores are (`SCORE_METHODS`), for the estimate: `'aum'` counts the
            negative AUMs, any other the low group of Otsu's split.
        return_indices_ranked_by_score: return the flagged indices, most suspicious first, instead of
            a mask.

    Returns:
        A boolean mask `(N,)` (default) or an int array of indices ranked by score.
    """
    s = _check_scores(scores)
    if num_issues is not None and threshold is not None:
        raise ValueError("give num_issues or threshold, not both")
    if num_issues is not None:
        if isinstance(num_issues, bool) or int(num_issues) != num_issues or not 0 <= num_issues <= s.size:
            raise ValueError(f"num_issues must be an integer in [0, {s.size}], got {num_issues!r}")
        count = int(num_issues)
    elif threshold is not None:
        count = int((s < threshold).sum())
    else:
        count = estimate_num_issues(s, score=score)
    order = np.argsort(s, kind="stable")[:count]
    if return_indices_ranked_by_score:
        return order
    mask = np.zeros(s.size, dtype=bool)
    mask[order] = True
    return mask


def evaluate(scores, noise_mask, *, score: str | None = None) -> dict[str, float]:
    """How well the scores rank the truly mislabelled samples first.

    Args:
        scores: `(N,)` label-quality scores, lower = more suspicious.
        noise_mask: `(N,)` bool, True where the label is known to be wrong.
        score: which score the scores are, for `estimate_num_issues`.

    Returns:
        `auroc` and `average_precision` of `-score` as a detector of the noisy samples (NaN when
        every or no sample is noisy), `precision_at_k` with k the true number of noisy samples (it
        equals recall at k), `estimated_num_issues` (`estimate_num_issues`) with the
        `precision_at_estimate` and `recall_at_estimate` of flagging that many, and the counts
        `num_noisy` and `num_samples`.
    """
    s = _check_scores(scores)
    truth = np.asarray(noise_mask)
    if truth.shape != s.shape:
        raise ValueError(f"noise_mask must have the shape of scores {s.shape}, got {truth.shape}")
    truth = truth.astype(bool)
    k = int(truth.sum())
    out: dict[str, float] = {"num_noisy": float(k), "num_samples": float(s.size)}
    if 0 < k < s.size:
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["auroc"] = float(roc_auc_score(truth, -s))
        out["average_precision"] = float(average_precision_score(truth, -s))
    else:
        out["auroc"] = out["average_precision"] = float("nan")
    ranked = np.argsort(s, kind="stable")
    out["precision_at_k"] = float(truth[ranked[:k]].mean()) if k else float("nan")
    estimated = estimate_num_issues(s, score=score)
    out["estimated_num_issues"] = float(estimated)
    hits = truth[ranked[:estimated]].sum()
    out["precision_at_estimate"] = float(hits / estimated) if estimated else float("nan")
    out["recall_at_estimate"] = float(hits / k) if k else float("nan")
    return out
