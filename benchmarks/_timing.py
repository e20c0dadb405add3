"""Side-by-side timing for the benchmarks: variants interleaved (A B C A B C ...), medians compared,
so a drift of the machine affects every variant alike."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 10) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
