"""Does a data-parameter step cost the same whatever the number of training samples?

Data Parameters' cost on a training step, CPU: O(batch), independent of the number of instances.

LeNet-5, batch 128, MNIST-sized random input; a step is zero_grad, forward, loss, backward, the
model's SGD step and the data parameters' sparse SGD step (joint curriculum, momentum 0.9). Variants
run interleaved (A B C A B C ...) and the medians are compared:

- joint data parameters with N = 2.4M instances (WebVision-sized) / with N = 50K: goal <= 1.10x;
- joint data parameters at N = 60K / the plain cross-entropy step: goal <= 1.05x.

For information, the same step with a dense optimizer over the instance parameters (what the
reference implementation does: ``torch.optim.SGD`` over all N rows, then the untouched rows reverted)
is printed at N = 2.4M when ``--dense`` is given.

    python benchmarks/bench_data_parameters.py

``--json FILE`` writes the figures with the command, the machine and the date.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from _results import begin, parser
from _steps import index_draws, lenet_sgd, random_batch, sgd_step
from _timing import interleaved

from curriculoss import DataParameters


def main() -> None:
    p = parser(__doc__, batch_size=128, repeats=200, threads=0)
    p.add_argument("--dense", action="store_true", help="also time a dense instance-parameter step at N = 2.4M")
    args = p.parse_args()
    started = begin(args)
    torch.manual_seed(0)
    b = args.batch_size
    x, y = random_batch(b)
    draw = index_draws(b)

    def make_step(n: int | None, dense: bool = False) -> Callable[[], None]:
        model, opt = lenet_sgd()
        if n is None:
            return lambda: sgd_step(F.cross_entropy(model(x), y), opt)
        dp = DataParameters(10, n, level="joint")
        if dense:
            w = dp.log_instance_sigma
            dopt = torch.optim.SGD([w], lr=0.1, momentum=0.9)

            def dense_loss() -> torch.Tensor:
                sigma = dp.log_class_sigma.exp()[y] + w.exp()[draw(n)]  # dense gradient, as the reference
                return F.cross_entropy(model(x) / sigma[:, None], y)
            return lambda: sgd_step(dense_loss(), opt, dopt)
        dopt = dp.optimizer(class_lr=0.1, instance_lr=0.1)
        return lambda: sgd_step(F.cross_entropy(dp(model(x), y, draw(n)), y), opt, dopt)

    fns = {"ce": make_step(None), "dp_50k": make_step(50_000), "dp_60k": make_step(60_000),
           "dp_2.4M": make_step(2_400_000)}
    if args.dense:
        fns["dense_2.4M"] = make_step(2_400_000, dense=True)
    t = interleaved(fns, args.repeats)
    print(f"LeNet-5 step, batch {b}, CPU, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats (medians)\n")
    print("| step | ms |")
    print("|---|---|")
    for name, v in t.items():
        print(f"| {name} | {1e3 * v:.3f} |")
    print(f"\njoint DP, N = 2.4M / N = 50K : {t['dp_2.4M'] / t['dp_50k']:.3f}x (goal <= 1.10x)")
    print(f"joint DP at N = 60K / plain CE: {t['dp_60k'] / t['ce']:.3f}x (goal <= 1.05x)")
    if args.dense:
        print(f"dense instance step at 2.4M / ours at 2.4M: {t['dense_2.4M'] / t['dp_2.4M']:.2f}x (information)")
    started.write(args.json, "data-parameters", {
        "batch_size": b, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "step_ms": {name: 1e3 * v for name, v in t.items()},
        "ratios": {"joint_2.4M_over_50k": t["dp_2.4M"] / t["dp_50k"], "joint_60k_over_ce": t["dp_60k"] / t["ce"]},
        "goals": {"joint_2.4M_over_50k": 1.10, "joint_60k_over_ce": 1.05}})

if __name__ == "__main__":
    main()
