"""Plots of a run's per-sample signals, in the style of the papers' figures.

Each function takes numpy arrays and an optional matplotlib `ax` and returns the figure; matplotlib
(the `[plot]` extra) is imported inside.
"""
from __future__ import annotations

import numpy as np

__all__ = ["confidence_by_group", "data_parameters_by_group", "score_histogram", "sample_groups", "training_curves",
           "save_figure"]


def _axes(ax, figsize=(5, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def save_figure(path, draw, *args, **kwargs) -> bool:
    """Draw a figure, `draw(*args, **kwargs)`, and write it to `path` with matplotlib's Agg backend (no
    display needed); without matplotlib (the `[plot]` extra) nothing is drawn. Whether it was written."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(*args, **kwargs)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def training_curves(history: list[dict[str, float]], metric: str, axes=None):
    """A run's learning curves from its `metrics.csv` rows: the training loss, and the test metric beside
    the training accuracy on the noisy and on the true labels; `axes`: a pair of matplotlib axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    else:
        fig = axes[0].figure
    epochs = [r["epoch"] for r in history]
    axes[0].plot(epochs, [r["train_loss"] for r in history])
    axes[0].set(xlabel="epoch", ylabel="train loss (task loss, noisy labels)")
    axes[1].plot(epochs, [r["test_metric"] for r in history], label=f"test {metric}")
    axes[1].plot(epochs, [r["train_acc_noisy"] for r in history], label="train acc (noisy labels)")
    axes[1].plot(epochs, [r["train_acc_true"] for r in history], label="train acc (true labels)")
    axes[1].set(xlabel="epoch")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def sample_groups(loss: np.ndarray, noise_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Split the training samples into easy, hard and noisy ones.

    Noisy: the corrupted labels. Hard: the quarter of the clean samples with the highest mean loss
    over the run. Easy: the other clean samples.
    """
    noisy = np.asarray(noise_mask, dtype=bool)
    mean_loss = np.nanmean(np.where(np.isfinite(loss), loss, np.nan), axis=0)
    clean = ~noisy
    cut = np.nanquantile(mean_loss[clean], 0.75) if clean.any() else np.inf
    hard = clean & (mean_loss >= cut)
    return {"easy": clean & ~hard, "hard": hard, "noisy": noisy}


def confidence_by_group(confidence: np.ndarray, groups: dict[str, np.ndarray], ax=None, ylabel: str = "confidence sigma*"):
    """Median and 25-75 % band of the confidence over epochs per group (SuperLoss Fig. 5)."""
    fig, ax = _axes(ax)
    epochs = np.arange(1, confidence.shape[0] + 1)
    colours = {"easy": "tab:green", "hard": "tab:orange", "noisy": "tab:red"}
    for name, members in groups.items():
        if not members.any():
            continue
        values = confidence[:, members]
        q25, q50, q75 = np.nanpercentile(values, [25, 50, 75], axis=1)
        ax.plot(epochs, q50, color=colours.get(name), label=f"{name} ({members.sum()})")
        ax.fill_between(epochs, q25, q75, color=colours.get(name), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def data_parameters_by_group(sigma: np.ndarray, noise_mask: np.ndarray, top: float = 0.4, ax=None):
    """Mean +- std data parameter of clean and noisy samples over epochs, and the share of the corrupt
    samples among the `top` fraction with the largest parameters (Data Parameters Fig. 4)."""
    fig, ax = _axes(ax, figsize=(6, 3.5))
    noisy = np.asarray(noise_mask, dtype=bool)
    epochs = np.arange(1, sigma.shape[0] + 1)
    for name, members, colour in (("clean", ~noisy, "tab:green"), ("noisy", noisy, "tab:red")):
        if not members.any():
            continue
        mean, std = np.nanmean(sigma[:, members], 1), np.nanstd(sigma[:, members], 1)
        ax.plot(epochs, mean, color=colour, label=name)
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set(xlabel="epoch", ylabel="data parameter sigma*")
    if noisy.any():
        k = max(1, int(round(top * sigma.shape[1])))
        share = []
        for row in sigma:
            filled = np.where(np.isfinite(row), row, -np.inf)
            share.append(noisy[np.argsort(-filled, kind="stable")[:k]].sum() / noisy.sum())
        twin = ax.twinx()
        twin.plot(epochs, 100 * np.asarray(share), "k--", label=f"corrupt in top {top:.0%}")
        twin.set(ylabel=f"% of corrupt samples in top {top:.0%}", ylim=(0, 105))
        twin.legend(fontsize=8, loc="lower right")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def score_histogram(scores: np.ndarray, noise_mask: np.ndarray | None = None, ax=None, bins: int = 50):
    """Histograms of the label-quality scores of clean and noisy samples."""
    fig, ax = _axes(ax)
    edges = np.linspace(0, 1, bins + 1)
    if noise_mask is None or not np.asarray(noise_mask).any():
        ax.hist(scores, bins=edges, color="tab:blue", alpha=0.7, label="all")
    else:
        noisy = np.asarray(noise_mask, dtype=bool)
        ax.hist(scores[~noisy], bins=edges, color="tab:green", alpha=0.6, label="clean")
        ax.hist(scores[noisy], bins=edges, color="tab:red", alpha=0.6, label="noisy")
    ax.set(xlabel="label-quality score (low = suspect)", ylabel="samples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
