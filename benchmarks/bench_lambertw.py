"""How much faster than scipy.special.lambertw is curriculoss.lambertw, on large inputs and on a batch?

scipy / curriculoss, CPU, interleaved, with 95 % intervals.

Both evaluate the same array; scipy's time includes taking the real part and casting back, as a host
implementation inside a training loop must. Three inputs: 1,000,000 values uniform on [-1/e, 100]
(losses-like), 1,000,000 uniform on [-1/e, 19.6] (what SuperLoss feeds it: beta/2 for losses up to
about 40; the speed of an iterative method depends on where its inputs lie), and 128 values (a
batch). Beside each: the top-level ``aten::`` operations of one call. ``--fused`` adds
``lambertw(..., fused=True)`` (one compiled kernel; its compile time is printed).

    python benchmarks/bench_lambertw.py
    python benchmarks/bench_lambertw.py --fused

``--json FILE`` writes the figures with the command, the machine and the date.
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.special
import torch

from _results import begin, parser
from _timing import interleaved_samples, load_note, ratio, spread, top_level_ops

from curriculoss import lambertw

#: The inputs: (values, upper end of their uniform range from -1/e); None: ``--size`` values. 19.6 is
#: what SuperLoss feeds lambertw (beta/2 for losses up to about 40).
INPUTS = ((None, 100.0), (None, 19.6), (128, 19.6))


def main() -> None:
    p = parser(__doc__, repeats=30, threads=0)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--fused", action="store_true", help="also lambertw(fused=True) (compiles first)")
    args = p.parse_args()
    started = begin(args)
    record = {"dtype": args.dtype, "rows": []}
    rng = np.random.default_rng(0)
    print(f"lambertw, {args.dtype}, CPU, {torch.get_num_threads()} threads; {load_note()}")
    print("| input | scipy, median (IQR) | ours, median (IQR) | scipy / ours, 95 % CI | aten ops | max abs difference |")
    print("|---|---|---|---|---|---|")
    for values, high in INPUTS:
        size = values or args.size
        label = f"{size:,} on [-1/e, {high:g}]"
        x_np = rng.uniform(-1 / math.e, high, size).astype(args.dtype)
        x = torch.from_numpy(x_np)
        fns = {"scipy": lambda: scipy.special.lambertw(x_np).real.astype(args.dtype), "ours": lambda: lambertw(x)}
        if args.fused:
            t0 = time.perf_counter()
            lambertw(x, fused=True)
            print(f"(fused: first call {time.perf_counter() - t0:.1f} s)")
            fns["fused"] = lambda: lambertw(x, fused=True)
        repeats = args.repeats if size > 10_000 else 100 * args.repeats
        t = interleaved_samples(fns, repeats, warmup=2 if size > 10_000 else 50)
        err = np.max(np.abs(lambertw(x).double().numpy() - scipy.special.lambertw(x_np.astype(np.float64)).real))
        for name in [n for n in fns if n != "scipy"]:
            r = ratio(t["scipy"], t[name])
            ops = top_level_ops(fns[name])
            print(f"| {label}{' fused' if name == 'fused' else ''} | {spread(t['scipy'])} | {spread(t[name])} | "
                  f"{r} | {ops} | {err:.1e} |")
            record["rows"].append({"input": label, "variant": "fused" if name == "fused" else "eager",
                                   "scipy_ms": 1e3 * float(np.median(t["scipy"])), "ours_ms": 1e3 * float(np.median(t[name])),
                                   "speedup": r.value, "low": r.low, "high": r.high, "ops": ops, "max_abs_difference": float(err)})
    print("goals: >= 20x scipy at 1M float32; faster than scipy at 128 values")
    record["threads"] = torch.get_num_threads()
    started.write(args.json, "lambertw", record)


if __name__ == "__main__":
    main()
