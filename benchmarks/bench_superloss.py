"""SuperLoss overhead on a training step: (CE + SuperLoss step) / (plain CE step).

LeNet-5, batch 128, MNIST-sized random input, CPU; forward, loss, backward and SGD step. The two
variants run interleaved (A B A B ...) and the ratio of the medians is printed, so drifts of the
machine affect both alike. SuperLoss uses tau='avg' with per-sample smoothing over N = 60,000.

    python benchmarks/bench_superloss.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from curriculoss import SuperLoss
from curriculoss.models import LeNet5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    n = 60_000
    model = LeNet5(1, 10, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = SuperLoss(tau="avg", lam=1.0, num_samples=n)
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    gen = torch.Generator().manual_seed(0)

    def step_ce() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_sl() -> None:
        index = torch.randint(0, n, (args.batch_size,), generator=gen)
        loss = criterion(F.cross_entropy(model(x), y, reduction="none"), index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step_ce()
        step_sl()
    times: dict[str, list[float]] = {"ce": [], "sl": []}
    for _ in range(args.repeats):
        for name, fn in (("ce", step_ce), ("sl", step_sl)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ce, sl = statistics.median(times["ce"]), statistics.median(times["sl"])
    print(f"LeNet-5 step, batch {args.batch_size}, CPU, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(f"plain CE step      : {1e3 * ce:.3f} ms (median)")
    print(f"CE + SuperLoss step: {1e3 * sl:.3f} ms (median)")
    print(f"ratio SuperLoss/CE : {sl / ce:.3f}x (goal <= 1.02x)")


if __name__ == "__main__":
    main()
