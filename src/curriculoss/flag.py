"""Find the mislabelled samples from one training run (numpy in, numpy out, cleanlab's conventions).

A run of a curriculum method leaves per-sample signals behind: the SuperLoss confidence sigma*
(its Fig. 5), the instance data parameters (Data Parameters Fig. 4), or simply each sample's loss.
This module turns them into label-quality scores in [0, 1], lower = more likely mislabelled, picks
the suspects, and measures the ranking against a known noise mask.

Signals are arrays of shape ``(epochs, N)`` (the ``loss`` and ``confidence`` arrays of a run folder's
``signals.npz``) or ``(N,)``; NaN entries (a sample not seen in an epoch) are skipped when averaging.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SCORE_METHODS", "label_quality_scores", "find_label_issues", "estimate_num_issues", "evaluate"]

#: How each kind of signal becomes a score in [0, 1] (lower = more suspicious).
SCORE_METHODS = {
    "loss": "exp(-mean loss): for cross-entropy the geometric mean of p_y over the epochs averaged",
    "superloss": "mean sigma* / e (sigma* <= e), the SuperLoss confidence",
    "data-params": "exp(-mean sigma*_i), the data parameter of each sample (noisy samples grow large ones)",
    "imae": "exp(-mean MAE loss) from an IMAE run's loss signal",
}


def _as_signal(signals, name: str = "signals") -> np.ndarray:
    arr = np.asarray(signals, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (epochs, N) or (N,), got {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: no samples")
    return arr


def label_quality_scores(signals, *, method: str = "loss", last_epochs: int | float | None = 0.5) -> np.ndarray:
    """One score per training sample in [0, 1]; lower = more likely mislabelled.

    Args:
        signals: per-sample signal, ``(epochs, N)`` or ``(N,)``: the per-sample loss for ``'loss'`` and
            ``'imae'``, the SuperLoss confidence for ``'superloss'``, the data parameters for
            ``'data-params'`` (the ``loss`` / ``confidence`` arrays of ``signals.npz``).
        method: one of :data:`SCORE_METHODS`.
        last_epochs: average over the last epochs only: a count, a fraction of the epochs (default
            0.5: the second half, when the easy samples are learnt and the noisy ones are not yet
            memorised), or ``None`` for all.

    Returns:
        ``(N,)`` float array in [0, 1]. A sample with no finite signal at all gets NaN.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {', '.join(SCORE_METHODS)}; got {method!r}")
    arr = _as_signal(signals)
    epochs = arr.shape[0]
    if last_epochs is not None:
        if isinstance(last_epochs, float):
            if not 0 < last_epochs <= 1:
                raise ValueError(f"last_epochs as a fraction must be in (0, 1], got {last_epochs}")
            last_epochs = max(1, int(round(epochs * last_epochs)))
        if last_epochs < 1:
            raise ValueError(f"last_epochs must be >= 1, got {last_epochs}")
        arr = arr[-last_epochs:]
    finite = np.isfinite(arr)
    counts = finite.sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(finite, arr, 0.0).sum(0) / np.where(counts > 0, counts, np.nan)
    if method in ("loss", "imae"):
        scores = np.exp(-np.maximum(mean, 0.0))
    elif method == "superloss":
        scores = np.clip(mean / np.e, 0.0, 1.0)
    else:
        scores = np.exp(-np.maximum(mean, 0.0))
    return scores


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


def estimate_num_issues(scores) -> int:
    """Number of likely label issues, estimated from the scores alone.

    The scores of a noisy training set are a mixture of a high clean mode and a low noisy one. The
    estimate is the number of scores below Otsu's threshold: the split of the sorted scores into a
    low and a high group that maximises the variance between the two groups' means (Otsu 1979). A
    score set with a single mode splits at a small low tail, so clean data gets few issues, not none.
    """
    s = np.sort(_check_scores(scores))
    n = s.size
    if n < 2 or s[0] == s[-1]:
        return 0
    cum = np.cumsum(s)
    k = np.arange(1, n)  # size of the low group
    mean_low = cum[:-1] / k
    mean_high = (cum[-1] - cum[:-1]) / (n - k)
    between = k * (n - k) * (mean_high - mean_low) ** 2
    between[s[1:] == s[:-1]] = -1.0  # never split between equal scores
    return int(k[np.argmax(between)])


def find_label_issues(scores, *, num_issues: int | None = None, threshold: float | None = None,
                      return_indices_ranked_by_score: bool = False) -> np.ndarray:
    """The samples most likely mislabelled.

    Args:
        scores: ``(N,)`` label-quality scores in [0, 1], lower = more suspicious
            (:func:`label_quality_scores`).
        num_issues: flag this many lowest-scoring samples.
        threshold: flag every sample whose score is below this value.
            With neither, the number is estimated by :func:`estimate_num_issues` (Otsu's split).
        return_indices_ranked_by_score: return the flagged indices, most suspicious first, instead of
            a mask.

    Returns:
        A boolean mask ``(N,)`` (default) or an int array of indices ranked by score.
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
        count = estimate_num_issues(s)
    order = np.argsort(s, kind="stable")[:count]
    if return_indices_ranked_by_score:
        return order
    mask = np.zeros(s.size, dtype=bool)
    mask[order] = True
    return mask


def _auroc(detector: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) identity, ties counted half."""
    order = np.argsort(detector, kind="stable")
    sorted_values = detector[order]
    ranks = np.empty(detector.size)
    # average rank over runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], detector.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    k = truth.sum()
    return float((ranks[truth].sum() - k * (k + 1) / 2.0) / (k * (truth.size - k)))


def _average_precision(detector: np.ndarray, truth: np.ndarray) -> float:
    """Sum over the distinct thresholds of (recall step) x precision, as scikit-learn defines it."""
    order = np.argsort(-detector, kind="stable")
    values, hits = detector[order], truth[order]
    last_of_run = np.r_[values[1:] != values[:-1], True]
    tp = np.cumsum(hits)[last_of_run]
    seen = np.flatnonzero(last_of_run) + 1
    recall = tp / truth.sum()
    precision = tp / seen
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def evaluate(scores, noise_mask) -> dict[str, float]:
    """How well the scores rank the truly mislabelled samples first.

    Args:
        scores: ``(N,)`` label-quality scores, lower = more suspicious.
        noise_mask: ``(N,)`` bool, True where the label is known to be wrong.

    Returns:
        ``auroc`` and ``average_precision`` of ``-score`` as a detector of the noisy samples (NaN when
        every or no sample is noisy), ``precision_at_k`` with k the true number of noisy samples (it
        equals recall at k), ``estimated_num_issues`` (:func:`estimate_num_issues`) with the
        ``precision_at_estimate`` and ``recall_at_estimate`` of flagging that many, and the counts
        ``num_noisy`` and ``num_samples``.
    """
    s = _check_scores(scores)
    truth = np.asarray(noise_mask)
    if truth.shape != s.shape:
        raise ValueError(f"noise_mask must have the shape of scores {s.shape}, got {truth.shape}")
    truth = truth.astype(bool)
    k = int(truth.sum())
    out: dict[str, float] = {"num_noisy": float(k), "num_samples": float(s.size)}
    if 0 < k < s.size:
        out["auroc"] = _auroc(-s, truth)
        out["average_precision"] = _average_precision(-s, truth)
    else:
        out["auroc"] = out["average_precision"] = float("nan")
    ranked = np.argsort(s, kind="stable")
    out["precision_at_k"] = float(truth[ranked[:k]].mean()) if k else float("nan")
    estimated = estimate_num_issues(s)
    out["estimated_num_issues"] = float(estimated)
    hits = truth[ranked[:estimated]].sum()
    out["precision_at_estimate"] = float(hits / estimated) if estimated else float("nan")
    out["recall_at_estimate"] = float(hits / k) if k else float("nan")
    return out
