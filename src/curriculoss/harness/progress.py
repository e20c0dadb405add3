"""A run's progress on stderr: a tqdm bar on a terminal, else one plain line per epoch (no carriage return
or escape code, for log files and pipes), or nothing."""
from __future__ import annotations

import sys

__all__ = ["stderr_is_terminal", "progress_bar"]


def stderr_is_terminal() -> bool:
    """Whether progress (written to stderr) reaches a terminal, where a redrawn bar belongs."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class _Silent:
    """No progress (`progress=False`, or a rank that does not write)."""

    def update(self, steps: int = 1) -> None:
        pass

    def end_epoch(self, row: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class _EpochLines(_Silent):
    """Progress into a file or a pipe: one plain line per epoch, no carriage return or escape code."""

    def __init__(self, desc: str, epochs: int):
        self.desc, self.epochs = desc, epochs

    def end_epoch(self, row: dict[str, float]) -> None:
        print(f"{self.desc} epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}, train acc "
              f"{row['train_acc_noisy']:.4f}, test {row['test_metric']:.4f}, {row['seconds']:.1f} s",
              file=sys.stderr, flush=True)


class _Bar(_Silent):
    """A tqdm bar on a terminal, one step per batch, the last test metric in its postfix."""

    def __init__(self, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(**kwargs)

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def end_epoch(self, row: dict[str, float]) -> None:
        self.bar.set_postfix(test=f"{row['test_metric']:.4f}")

    def close(self) -> None:
        self.bar.close()


def progress_bar(enabled: bool, desc: str, epochs: int, steps: int, start: int, position: int) -> _Silent:
    """The progress of a run of `epochs` epochs of `steps` batches, from epoch `start` on."""
    if not enabled:
        return _Silent()
    if not stderr_is_terminal():
        return _EpochLines(desc, epochs)
    return _Bar(total=epochs * steps, initial=start * steps, desc=desc, position=position, leave=False,
                dynamic_ncols=True)
