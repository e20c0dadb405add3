"""Lambert W on 1,000,000 float32 values: scipy.special.lambertw / curriculoss.lambertw, CPU.

Both evaluate the same array (losses-like values in [-1/e, 100]); scipy's time includes taking the real
part and casting back to float32, as a host implementation inside a training loop must. The two run
interleaved and the ratio of the medians is printed.

    python benchmarks/bench_lambertw.py
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import scipy.special
import torch

from curriculoss import lambertw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x_np = rng.uniform(-1 / math.e, 100.0, args.size).astype(args.dtype)
    x = torch.from_numpy(x_np)

    def ours() -> None:
        lambertw(x)

    def scipy_host() -> None:
        scipy.special.lambertw(x_np).real.astype(args.dtype)

    for fn in (ours, scipy_host):
        fn()
    times: dict[str, list[float]] = {"ours": [], "scipy": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("scipy", scipy_host)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["ours"]), statistics.median(times["scipy"])
    err = np.max(np.abs(lambertw(x).double().numpy() - scipy.special.lambertw(x_np.astype(np.float64)).real))
    print(f"lambertw on {args.size:,} {args.dtype} values, CPU, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(f"curriculoss.lambertw : {1e3 * a:.2f} ms (median)")
    print(f"scipy.special.lambertw: {1e3 * b:.2f} ms (median)")
    print(f"ratio scipy/ours      : {b / a:.1f}x (goal >= 10x); max |difference| {err:.2e}")


if __name__ == "__main__":
    main()
