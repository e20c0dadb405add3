"""SuperLoss overhead on a training step: (CE + SuperLoss step) / (plain CE step), with a 95 % interval.

LeNet-5, batch 128, MNIST-sized random input, CPU; forward, loss, backward and SGD step. The variants
run interleaved (order rotated every round); the ratio is the median of the per-round ratios, with a
bootstrap interval over the rounds. SuperLoss uses tau='avg' with per-sample smoothing over N = 60,000.
Beside each timing, the top-level ``aten::`` operations of CE + SuperLoss forward + backward on fixed
logits (``torch.profiler``). ``--fused`` adds ``SuperLoss(..., fused=True)`` and prints its first-call
(compile) time.

    python benchmarks/bench_superloss.py
    python benchmarks/bench_superloss.py --fused
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _timing import interleaved_samples, load_note, ratio, spread, top_level_ops

from curriculoss import SuperLoss
from curriculoss.harness.models import LeNet5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--fused", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    n, b = 60_000, args.batch_size
    model = LeNet5(1, 10, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(b, 1, 28, 28)
    y = torch.randint(0, 10, (b,))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(b, 10, requires_grad=True)
    fixed_index = torch.randint(0, n, (b,), generator=gen)

    def step_ce() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def make(criterion: SuperLoss):
        def step() -> None:
            index = torch.randint(0, n, (b,), generator=gen)
            loss = criterion(F.cross_entropy(model(x), y, reduction="none"), index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def part() -> None:
            z.grad = None
            criterion(F.cross_entropy(z, y, reduction="none"), fixed_index).backward()
        return step, part

    steps = {"ce": step_ce}
    ops = {"ce": top_level_ops(lambda: F.cross_entropy(z, y).backward())}
    steps["sl"], part = make(SuperLoss(tau="avg", lam=1.0, num_samples=n))
    ops["sl"] = top_level_ops(part)
    if args.fused:
        steps["sl_fused"], part = make(SuperLoss(tau="avg", lam=1.0, num_samples=n, fused=True))
        t0 = time.perf_counter()
        steps["sl_fused"]()
        print(f"fused: first step {time.perf_counter() - t0:.1f} s (compilation included)")
        ops["sl_fused"] = top_level_ops(part)
    times = interleaved_samples(steps, args.repeats, warmup=20)
    print(f"LeNet-5 step, batch {b}, CPU, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds; {load_note()}")
    print(f"plain CE step      : {spread(times['ce'])}, {ops['ce']} aten ops (CE forward + backward)")
    for name in [k for k in steps if k != "ce"]:
        r = ratio(times[name], times["ce"])
        print(f"CE + SuperLoss{' fused' if name == 'sl_fused' else ''} : {spread(times[name])}, {ops[name]} aten ops; "
              f"ratio {r} (95 % CI, resolution +-{100 * r.half_width:.1f} %; goal <= 1.02x)")


if __name__ == "__main__":
    main()
