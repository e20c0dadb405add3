"""Side-by-side timing for the benchmarks.

Variants run interleaved (A B C A B C ...), so a drift of the machine affects every variant alike.
:func:`ratio` reports each variant's time against a baseline as the median of the *per-round*
ratios (variant / baseline within one round) with a bootstrap confidence interval over the rounds:
pairing cancels the slow drifts of a shared machine, and the interval says what the run can resolve.
:func:`samples_in_processes` runs the rounds in several processes, and :func:`ratio` then resamples
processes: where the code and the objects lie in memory shifts a step's time by an offset that lasts
as long as the process, which only several processes can sample.
:func:`top_level_ops` counts the ``aten::`` operations a call dispatches (``torch.profiler``), the
figure that does not depend on machine noise, printed beside every timing.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


def interleaved_samples(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 10,
                        max_seconds: float | None = None, min_repeats: int = 10, *, own_time: bool = False,
                        until: Callable[[dict[str, list[float]]], bool] | None = None) -> dict[str, list[float]]:
    """Seconds of every call of each function, the functions called in turn ``repeats`` times (fewer if
    ``max_seconds`` runs out first, or ``until(times so far)`` is true, but at least ``min_repeats``); the
    order rotates every round.

    ``own_time=True``: each function returns the seconds to count itself, the part of its call that is
    measured (an epoch without the set-up that precedes it)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            got = fns[name]()
            times[name].append(float(got) if own_time else time.perf_counter() - t0)
        if rep + 1 < min_repeats:
            continue
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        if until is not None and until(times):
            break
    return times


def print_samples(times: dict[str, list[float]]) -> None:
    """A child process's samples, as the one line :func:`samples_in_processes` reads."""
    print("SAMPLES " + json.dumps(times), flush=True)


def samples_in_processes(argv: list[str], processes: int) -> tuple[dict[str, list[float]], list[int]]:
    """Run ``python *argv`` ``processes`` times, one after the other, each printing its samples with
    :func:`print_samples`: (the samples pooled, the process of each round).

    Why: where a variant's objects, and the interpreter's and libraries' code, lie in memory shifts a
    step's time by an offset that lasts as long as the process (up to about 1 % for a LeNet-5 step
    here: two plain cross-entropy variants measured 0.988x-1.008x of each other from one making to the
    next, and SuperLoss's ratio 1.027x-1.042x from one process to the next). Rounds of one process share
    that offset, so an interval over them is too narrow; :func:`ratio` with ``groups`` resamples whole
    processes."""
    times: dict[str, list[float]] = {}
    groups: list[int] = []
    for k in range(processes):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark process {k} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        lines = [line for line in done.stdout.splitlines() if line.startswith("SAMPLES ")]
        got = json.loads(lines[-1][len("SAMPLES "):])
        for name, ts in got.items():
            times.setdefault(name, []).extend(ts)
        groups += [k] * len(next(iter(got.values())))
    return times, groups


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 10) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn ``repeats`` times."""
    return {name: statistics.median(ts) for name, ts in interleaved_samples(fns, repeats, warmup).items()}


@dataclass
class Ratio:
    """Median of the per-round ratios and its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    rounds: int

    @property
    def half_width(self) -> float:
        """Half the interval's width, relative to the ratio: what the run can resolve."""
        return (self.high - self.low) / 2 / self.value

    def __str__(self) -> str:
        return f"{self.value:.3f}x [{self.low:.3f}, {self.high:.3f}]"


def ratio(times: list[float], base: list[float], confidence: float = 0.95, resamples: int = 2000,
          seed: int = 0, groups: list[int] | None = None) -> Ratio:
    """Per-round ratios ``times[i] / base[i]``: their median, with a percentile bootstrap interval
    (rounds resampled with replacement; with ``groups``, the process of each round from
    :func:`samples_in_processes`, whole processes are resampled, so that the interval includes the
    offsets that differ from one process to the next)."""
    r = np.asarray(times[: len(base)]) / np.asarray(base[: len(times)])
    rng = np.random.default_rng(seed)
    if groups is None or len(set(groups)) < 2:
        boot = np.median(r[rng.integers(0, len(r), (resamples, len(r)))], axis=1)
    else:
        labels = np.asarray(groups[: len(r)])
        members = [np.flatnonzero(labels == b) for b in np.unique(labels)]
        picks = rng.integers(0, len(members), (resamples, len(members)))
        boot = np.array([np.median(r[np.concatenate([members[i] for i in row])]) for row in picks])
    alpha = (1 - confidence) / 2
    return Ratio(float(np.median(r)), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)), len(r))


def spread(ts: list[float]) -> str:
    """Median and interquartile range, in milliseconds."""
    q1, q2, q3 = np.quantile(np.asarray(ts) * 1e3, [0.25, 0.5, 0.75])
    return f"{q2:.3f} ms (IQR {q1:.3f}-{q3:.3f})"


def top_level_ops(fn: Callable[[], object]) -> int:
    """Number of ``aten::`` operations that no other ``aten::`` operation called, in one call of ``fn``
    (after a warm-up call); backward operations run by the autograd engine count too."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(_is_aten(event) and _called_by_no_aten(event) for event in prof.events())


def _is_aten(event) -> bool:
    return event.name.startswith("aten::")


def _called_by_no_aten(event) -> bool:
    """Whether no ``aten::`` operation is among the event's callers."""
    parent = event.cpu_parent
    while parent is not None and not _is_aten(parent):
        parent = parent.cpu_parent
    return parent is None


def load_note() -> str:
    """The machine's load average, to print with the timings (timings on a loaded machine are noisy)."""
    from _results import load_average

    averages = load_average()
    return "load average " + (" ".join(f"{v:.2f}" for v in averages) if averages else "unknown")
