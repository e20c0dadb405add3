"""One training epoch with each method against the plain cross-entropy loop (goal <= 1.05x each).

MNIST from its IDX files (``--data-dir MNIST_DIR``, the folder holding them; or ``--dataset digits``),
LeNet-5, SGD with momentum, batch 128, CPU. The data set, model, methods and noise come from the
library (``curriculoss.harness.data.load``, ``curriculoss.harness.models.build_model``,
``curriculoss.harness.methods.build_method``, ``curriculoss.noise.symmetric`` at 40 %). The baseline is a plain
PyTorch loop with ``F.cross_entropy``; each method runs the same loop through its ``Method`` (and its
own optimizer, for data parameters). Only the loop is timed: batch indexing, forward, loss, backward
and the optimizer steps. Methods run interleaved, one epoch each per round with the order rotated
between rounds. Each method's ratio is the median of its per-round ratios (epoch / CE epoch of the same
round) with a 95 % bootstrap interval; rounds continue (up to ``--repeats``, or ``--max-minutes``) until
every interval's half-width is below ``--resolution`` (2 %), and the script says whether it got there.

    python benchmarks/bench_epoch.py --data-dir MNIST_DIR                 # the full 60,000-image epoch
    python benchmarks/bench_epoch.py --data-dir MNIST_DIR --limit 10000   # a shorter epoch
    python benchmarks/bench_epoch.py --data-dir MNIST_DIR --quick         # a smoke run (3,000 images, 3 repeats)
"""
from __future__ import annotations

import argparse
import statistics
import time

from _timing import load_note, ratio

import numpy as np
import torch
import torch.nn.functional as F

from curriculoss import noise
from curriculoss.harness import data as datasets
from curriculoss.harness.methods import METHODS, REGRESSION_LOSSES, MethodOptions, build_method
from curriculoss.harness.models import build_model

GOAL = 1.05


class Runner:
    """One method's model, optimizers and epoch loop; the state carries over between repeats."""

    def __init__(self, name: str, data: datasets.Dataset, y_train: torch.Tensor, x_train: torch.Tensor,
                 batch_size: int, seed: int):
        self.name = name
        torch.manual_seed(seed)  # the same initial weights for every method
        self.model = build_model("lenet", tuple(data.input_shape), data.num_classes)
        self.method = None if name == "baseline" else build_method(name, MethodOptions(), data.num_classes, len(y_train))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.method_opt = self.method.make_optimizer() if self.method is not None else None
        self.x, self.y, self.batch_size = x_train, y_train, batch_size

    def epoch(self, order: torch.Tensor) -> float:
        model, method, opt, method_opt = self.model, self.method, self.opt, self.method_opt
        x, y, bs = self.x, self.y, self.batch_size
        t0 = time.perf_counter()
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            xb, yb = x[idx], y[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb) if method is None else method(out, yb, idx)
            opt.zero_grad(set_to_none=True)
            if method_opt is not None:
                method_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if method_opt is not None:
                method_opt.step()
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", metavar="MNIST_DIR", help="folder of the MNIST IDX files (plain or gzipped)")
    parser.add_argument("--dataset", default="idx", choices=("idx", "digits"), help="digits: no files needed")
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in REGRESSION_LOSSES],
                        help="default: every classification method")
    parser.add_argument("--limit", type=int, default=None, help="training images per epoch (default: all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="most epochs per method (interleaved rounds)")
    parser.add_argument("--min-repeats", type=int, default=5, help="fewest rounds before the resolution is checked")
    parser.add_argument("--resolution", type=float, default=0.02, help="target half-width of every 95 %% interval")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop adding rounds after this long")
    parser.add_argument("--noise-rate", type=float, default=0.4, help="symmetric label noise (default 0.4)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --limit 3000 --repeats 3")
    args = parser.parse_args()
    if args.quick:
        args.limit = args.limit or 3000
        args.repeats = args.min_repeats = 3
    unknown = [m for m in args.methods if m not in METHODS or m in REGRESSION_LOSSES]
    if unknown:
        parser.error(f"--methods: unknown or regression-only {unknown}; choose from "
                     f"{', '.join(m for m in METHODS if m not in REGRESSION_LOSSES)}")
    if args.dataset != "digits" and not args.data_dir:
        parser.error("--data-dir MNIST_DIR is needed (the folder of the MNIST IDX files), or --dataset digits")
    if args.threads:
        torch.set_num_threads(args.threads)

    data = datasets.load(args.dataset, data_dir=None if args.dataset == "digits" else args.data_dir, limit=args.limit)
    noisy = noise.symmetric(data.y_train, args.noise_rate, data.num_classes, seed=0)
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(np.asarray(noisy.labels))
    n = len(y_train)

    names = ["baseline", *args.methods]
    runners = [Runner(name, data, y_train, x_train, args.batch_size, seed=0) for name in names]
    gen = torch.Generator().manual_seed(0)
    warm = torch.randperm(n, generator=gen)[: min(n, 20 * args.batch_size)]
    for r in runners:  # warm-up: allocator, autograd graph caches, lazy state
        r.epoch(warm)

    times: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    for rep in range(args.repeats):
        order = torch.randperm(n, generator=gen)
        shift = rep % len(runners)
        for r in runners[shift:] + runners[:shift]:
            times[r.name].append(r.epoch(order))
        if rep + 1 >= args.min_repeats:
            widest = max(ratio(times[m], times["baseline"]).half_width for m in args.methods)
            if widest <= args.resolution:
                break
            if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
                break

    rounds = len(times["baseline"])
    base = statistics.median(times["baseline"])
    steps = -(-n // args.batch_size)
    print(f"{data.name} ({n} training images, {steps} steps of {args.batch_size}), LeNet-5, CPU, "
          f"{torch.get_num_threads()} threads, {rounds} interleaved epochs per method, "
          f"{args.noise_rate:.0%} symmetric noise; {load_note()}")
    print(f"{'method':<12} {'epoch (s, median)':>18} {'ratio vs CE loop, 95 % CI':>30} {'+-':>6}  goal <= {GOAL:.2f}x")
    print(f"{'plain CE':<12} {base:>18.3f} {'1':>30}")
    worst, widest, undecided = 0.0, 0.0, []
    for name in args.methods:
        r = ratio(times[name], times["baseline"])
        worst, widest = max(worst, r.value), max(widest, r.half_width)
        verdict = "ok" if r.high <= GOAL else "OVER" if r.low > GOAL else "undecided"
        if verdict == "undecided":
            undecided.append(name)
        print(f"{name:<12} {statistics.median(times[name]):>18.3f} {str(r):>30} {100 * r.half_width:>5.1f}%  {verdict}")
    if widest <= args.resolution:
        print(f"resolution: every interval within +-{100 * widest:.1f} % (target {100 * args.resolution:.0f} %): reached")
    else:
        print(f"resolution: could NOT resolve {100 * args.resolution:.0f} % in {rounds} rounds (widest interval "
              f"+-{100 * widest:.1f} %); more rounds (--repeats) or a quieter machine are needed")
    print(f"worst ratio {worst:.3f}x; " + (f"undecided against the goal: {', '.join(undecided)}" if undecided else
                                           f"{'meets' if worst <= GOAL else 'misses'} the goal (<= {GOAL:.2f}x for every method)"))


if __name__ == "__main__":
    main()
