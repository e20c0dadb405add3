"""What does each method add to a LeNet-5 training step over plain cross-entropy?

Each method's step against the plain cross-entropy step, in one interleaved run.

Batch 128 of MNIST-sized random input, CPU; a step is zero_grad, forward, loss, backward and the SGD
steps (the model's, and data parameters' own sparse SGD). The model's learning rate is 0, so that
every variant times the same weights (see ``make``). All variants run interleaved with the order
rotated every round, in ``--processes`` processes run one after the other; each ratio is the median
of the per-round ratios (variant / CE within a round) with a 95 % bootstrap interval that resamples
whole processes. Where the code and a variant's objects lie in memory shifts its time by up to about
1 % for as long as the process lives, so rounds of one process share an offset that an interval over
rounds would not see. ``ce_again``, a second plain CE made on its own, is the control: its ratio would
be 1 on a perfect bench. Beside each timing: the top-level ``aten::``
operations of the loss part (loss forward + backward on fixed logits, plus the data-parameter step),
counted with ``torch.profiler``: the figure that does not depend on the machine's load. Then the loss
part's own time, called back to back and right after a forward of the model: on this machine code that
runs after the convolutions runs several times slower than in a tight loop (caches), which is why the
step ratio is larger than the loss part's warm time suggests.

Variants: SuperLoss (tau='avg', per-sample smoothing over N = 60,000) eager and, with ``--fused``,
with ``fused=True`` (its compile time is printed); data parameters at the instance level (the
command line's default) and the joint curriculum, N = 60,000; IMAE (T = 8). Two floors, the least any
per-sample reweighting can add to CE: ``floor_weighted``, CE per sample times fixed weights, then the
mean (2 operations more than CE); ``floor_node``, the same multiply inside a minimal Python autograd
node (what SuperLoss, IMAE and the data parameters need for their hand-written gradients).

    python benchmarks/bench_step.py                 # 480 rounds in 6 processes
    python benchmarks/bench_step.py --fused         # also SuperLoss(fused=True)

``--json FILE`` writes the figures with the command, the machine and the date.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from _results import begin, parser
from _steps import index_draws, lenet_sgd, random_batch, sgd_step
from _timing import interleaved_samples, load_note, print_samples, ratio, samples_in_processes, spread, top_level_ops

from curriculoss import DataParameters, SuperLoss, imae
from curriculoss.harness.models import LeNet5

GOALS = {"superloss": 1.02, "superloss_fused": 1.02, "dp_instance": 1.03, "dp_joint": 1.03, "imae": 1.02}
N = 60_000


class _Weighted(torch.autograd.Function):
    """loss * w with a hand-written backward: the smallest Python autograd node (the floor variant)."""

    @staticmethod
    def forward(ctx, loss, w):  # type: ignore[override]
        ctx.save_for_backward(w)
        return loss * w

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * w, None


def main() -> None:
    p = parser(__doc__, batch_size=128, repeats=(480, "interleaved rounds, all processes together"), threads=0)
    p.add_argument("--processes", type=int, default=6, help="processes that run the rounds, one after the other")
    p.add_argument("--max-seconds", type=float, default=None, help="stop each process's rounds after this long")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one process's rounds
    p.add_argument("--fused", action="store_true", help="also SuperLoss(fused=True) (compiles first)")
    args = p.parse_args()
    started = begin(args)
    b = args.batch_size
    x, y = random_batch(b, torch.Generator().manual_seed(0))
    draw = index_draws(b)
    w = torch.rand(b, generator=torch.Generator().manual_seed(1)) + 0.5  # the floor variants' fixed weights

    def make(kind: str) -> tuple[Callable[[], None], Callable[[], None]]:
        """(training step, loss part alone on fixed logits) for one variant."""
        torch.manual_seed(0)
        model, opt = lenet_sgd(lr=0.0)
        # its output layer starts at zero: drawn here, so that the logits, and the losses, vary by sample
        torch.nn.init.kaiming_normal_(model.fc3.weight, nonlinearity="linear")
        # lr 0: SGD's arithmetic is unchanged but the weights stay where they start, so every variant
        # times the same model. Trained, the variants' models drift apart and their own cost with them
        # (a weighted CE whose weights were random ran 0.90x plain CE), which is no cost of the loss.
        z = torch.randn(b, 10, requires_grad=True)
        idx = draw(N)
        extra = ()  # the data parameters' own optimizer
        if kind in ("ce", "ce_again"):
            loss_fn = lambda out, i: F.cross_entropy(out, y)  # noqa: E731
        elif kind.startswith("superloss"):
            crit = SuperLoss(tau="avg", lam=1.0, num_samples=N, fused=kind.endswith("fused"))
            loss_fn = lambda out, i: crit(F.cross_entropy(out, y, reduction="none"), i)  # noqa: E731
        elif kind.startswith("dp"):
            dp = DataParameters(10, N, level=kind.split("_")[1])
            extra = (dp.optimizer(class_lr=0.1, instance_lr=0.1),)
            loss_fn = lambda out, i: F.cross_entropy(dp(out, y, i), y)  # noqa: E731
        elif kind == "floor_weighted":  # the cheapest reweighting: per-sample CE times fixed weights
            loss_fn = lambda out, i: (F.cross_entropy(out, y, reduction="none") * w).mean()  # noqa: E731
        elif kind == "floor_node":  # the same with the weights applied by a Python autograd node, as ours are
            loss_fn = lambda out, i: _Weighted.apply(F.cross_entropy(out, y, reduction="none"), w).mean()  # noqa: E731
        else:
            loss_fn = lambda out, i: imae(out, y, T=8.0)  # noqa: E731

        def step() -> None:
            sgd_step(loss_fn(model(x), draw(N)), opt, *extra)

        def part() -> None:
            z.grad = None
            sgd_step(loss_fn(z, idx), *extra)
        return step, part

    def cold_and_warm(part: Callable[[], None], rounds: int = 200) -> tuple[float, float]:
        """Median microseconds of the loss part right after a forward of the model (as in a training
        step: the convolutions have just run) and called back to back (warm caches)."""
        probe = LeNet5(1, 10, 28)
        cold, warm = [], []
        for _ in range(rounds):
            with torch.no_grad():
                probe(x)
            t0 = time.perf_counter()
            part()
            t1 = time.perf_counter()
            part()
            cold.append(t1 - t0)
            warm.append(time.perf_counter() - t1)
        return 1e6 * statistics.median(cold), 1e6 * statistics.median(warm)

    kinds = ["ce", "ce_again", "superloss", *(["superloss_fused"] if args.fused else []),
             "dp_instance", "dp_joint", "imae", "floor_weighted", "floor_node"]
    if args.child:
        print_samples(interleaved_samples({kind: make(kind)[0] for kind in kinds}, args.repeats, warmup=20,
                                          max_seconds=args.max_seconds))
        return
    ops, parts = {}, {}
    for kind in kinds:  # op counts, compilation, and the loss parts timed alone below
        step, part = make(kind)
        parts[kind] = part
        t0 = time.perf_counter()
        step()
        if kind == "superloss_fused":
            print(f"SuperLoss(fused=True): first step {time.perf_counter() - t0:.1f} s (compilation included)")
        ops[kind] = top_level_ops(part)

    child = [__file__, "--child", "--batch-size", str(b), "--repeats", str(max(args.repeats // args.processes, 1)),
             "--threads", str(args.threads), *(["--fused"] if args.fused else []),
             *(["--max-seconds", str(args.max_seconds / args.processes)] if args.max_seconds else [])]
    times, processes = samples_in_processes(child, args.processes)
    rounds = len(times["ce"])
    record = {"batch_size": b, "threads": torch.get_num_threads(), "rounds": rounds, "processes": len(set(processes)),
              "num_samples": N, "variants": {}}
    print(f"LeNet-5 step, batch {b}, CPU, {torch.get_num_threads()} threads, {rounds} interleaved rounds in "
          f"{len(set(processes))} processes; {load_note()} (2 cores shared with other jobs: timings are noisy, op counts are not)")
    print("| variant | step, median (IQR) | / CE, 95 % CI over processes | resolution (CI half-width) | aten ops, loss part | goal |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        record["variants"][kind] = {"step_ms": 1e3 * statistics.median(times[kind]), "ops": ops[kind]}
        if kind == "ce":
            print(f"| plain CE | {spread(times[kind])} | 1 | | {ops[kind]} | |")
            continue
        r = ratio(times[kind], times["ce"], groups=processes)
        goal = GOALS.get(kind)
        record["variants"][kind].update(ratio=r.value, low=r.low, high=r.high, goal=goal)
        if goal is None:
            role = "(control: 1 on a perfect bench)" if kind == "ce_again" else "(floor)"
            print(f"| {kind} | {spread(times[kind])} | {r} | {100 * r.half_width:.1f} % | {ops[kind]} | {role} |")
            continue
        verdict = "met" if r.high <= goal else ("NOT met" if r.low > goal else "undecided (CI straddles it)")
        print(f"| {kind} | {spread(times[kind])} | {r} | {100 * r.half_width:.1f} % | {ops[kind]} | <= {goal:.2f}x: {verdict} |")
    print("\nThe loss part alone (forward + backward on fixed logits, + the data-parameter step), median us:")
    print("| variant | back to back | right after a forward of the model | extra over CE, after the model |")
    print("|---|---|---|---|")
    timed = {kind: cold_and_warm(parts[kind]) for kind in kinds}
    for kind in kinds:
        cold, warm = timed[kind]
        print(f"| {kind} | {warm:.0f} | {cold:.0f} | {cold - timed['ce'][0]:.0f} |")
        record["variants"][kind].update(loss_part_us_back_to_back=warm, loss_part_us_after_forward=cold)
    started.write(args.json, "step", record)


if __name__ == "__main__":
    main()
