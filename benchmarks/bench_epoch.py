"""What does an epoch of `curriculoss train` cost, with each method, against a plain hand-written PyTorch loop?

Harness: ``curriculoss.harness.train.train`` with no run folder, one epoch per call, whose ``seconds``
cover the epoch's training loop (batches, forward, the method's loss, backward, the optimizer steps,
the per-sample signals recorded) and the test-set evaluation; the set-up before it (reading the data,
the noise, the model) is not counted. Plain loop: the same data tensors and noisy labels, the same
initial weights, SGD, sample order and batch size, ``F.cross_entropy``, then the same test-set
accuracy; nothing else. MNIST from its IDX files (``--data-dir MNIST_DIR``) or the built-in digits
(``--dataset digits``), LeNet-5, 40 % symmetric noise.

The variants run interleaved (``benchmarks/_timing.py``), one epoch each per round, from the same
initial weights every round, the order rotated between rounds. Each ratio is the median of the
per-round ratios (epoch / plain epoch of the same round) with a 95 % bootstrap interval; rounds go on
(up to ``--repeats``, or ``--max-minutes``) until every interval's half-width is below
``--resolution`` (2 %), and the script says whether it got there. Goal: every method's harness epoch
within 1.05x of the plain CE loop (``ce``: the harness's own cost; the others: the method's cost on top).

    python benchmarks/bench_epoch.py --data-dir MNIST_DIR                 # the full 60,000-image epoch
    python benchmarks/bench_epoch.py --data-dir MNIST_DIR --limit 10000   # a shorter epoch
    python benchmarks/bench_epoch.py --data-dir MNIST_DIR --device cuda   # on a GPU

``MNIST_DIR`` is a folder holding the MNIST IDX files (plain or gzipped); ``--json FILE`` writes the
figures with the command, the machine and the date.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from _results import begin, parser
from _steps import ce_epoch
from _timing import interleaved_samples, load_note, ratio

from curriculoss.harness.config import TrainConfig
from curriculoss.harness.devices import resolve_device
from curriculoss.harness.methods import METHODS, REGRESSION_LOSSES
from curriculoss.harness.models import build_model
from curriculoss.harness.train import prepare_data, train

GOAL = 1.05
CLASSIFICATION = [m for m in METHODS if m not in REGRESSION_LOSSES]


def plain_epoch(cfg: TrainConfig, tensors: tuple[torch.Tensor, ...], input_shape: tuple, num_classes: int) -> float:
    """Seconds of one epoch of a hand-written CE loop (train, then test accuracy), from the initial weights."""
    x, y, xt, yt = tensors
    torch.manual_seed(cfg.seed)  # the harness seeds the same way before it builds the model
    model = build_model(cfg.model, input_shape, num_classes).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    ce_epoch(model, opt, x, y, cfg.batch_size, seed=cfg.seed * 100_003)
    model.eval()
    with torch.no_grad():
        correct = sum((model(xt[i:i + 1024]).argmax(1) == yt[i:i + 1024]).sum() for i in range(0, len(xt), 1024))
    float(correct)  # waits for the device
    return time.perf_counter() - t0


def harness_epoch(cfg: TrainConfig) -> float:
    """Seconds of the epoch of a one-epoch `curriculoss train` run (its training loop and evaluation)."""
    return train(cfg, None, progress=False)["seconds"]


def main() -> None:
    p = parser(__doc__, batch_size=128, repeats=(30, "most epochs per variant (interleaved rounds)"), threads=0)
    p.add_argument("--data-dir", metavar="MNIST_DIR", help="folder of the MNIST IDX files (plain or gzipped)")
    p.add_argument("--dataset", default="idx", choices=("idx", "digits"), help="digits: no files needed")
    p.add_argument("--methods", nargs="+", default=CLASSIFICATION, choices=CLASSIFICATION, metavar="METHOD",
                   help="default: every classification method")
    p.add_argument("--limit", type=int, default=None, help="training images per epoch (default: all)")
    p.add_argument("--min-repeats", type=int, default=5, help="fewest rounds before the resolution is checked")
    p.add_argument("--resolution", type=float, default=0.02, help="target half-width of every 95 %% interval")
    p.add_argument("--max-minutes", type=float, default=None, help="stop adding rounds after this long")
    p.add_argument("--noise-rate", type=float, default=0.4, help="symmetric label noise (default 0.4)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.dataset != "digits" and not args.data_dir:
        p.error("--data-dir MNIST_DIR is needed (the folder of the MNIST IDX files), or --dataset digits")
    started = begin(args)

    cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir if args.dataset != "digits" else None,
                      limit=args.limit, model="lenet", method="ce", noise_rate=args.noise_rate, epochs=1,
                      batch_size=args.batch_size, lr=0.01, augment="none", device=args.device)
    dev = resolve_device(args.device)
    data, noisy = prepare_data(cfg, stream=False)
    tensors = tuple(torch.from_numpy(np.asarray(a)).to(dev) for a in
                    (data.x_train, np.asarray(noisy.labels, np.int64), data.x_test, np.asarray(data.y_test, np.int64)))
    shape = tuple(data.input_shape)
    fns = {"plain": lambda: plain_epoch(cfg, tensors, shape, data.num_classes)}
    fns.update({m: (lambda m=m: harness_epoch(replace(cfg, method=m))) for m in args.methods})

    def resolved(times: dict[str, list[float]]) -> bool:
        return max(ratio(times[m], times["plain"]).half_width for m in args.methods) <= args.resolution

    times = interleaved_samples(fns, args.repeats, warmup=1, min_repeats=min(args.min_repeats, args.repeats),
                                max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                                own_time=True, until=resolved)

    rounds, n = len(times["plain"]), len(tensors[1])
    base = statistics.median(times["plain"])
    print(f"{data.name} ({n} training images, {-(-n // args.batch_size)} steps of {args.batch_size}, "
          f"{len(tensors[3])} test images), LeNet-5, {dev}, {torch.get_num_threads()} threads, {rounds} interleaved "
          f"epochs per variant, {args.noise_rate:.0%} symmetric noise; {load_note()}")
    print(f"| variant | epoch (s, median) | / plain CE loop, 95 % CI | resolution | goal <= {GOAL:.2f}x |")
    print("|---|---|---|---|---|")
    print(f"| plain CE loop | {base:.3f} | 1 | | |")
    record = {"dataset": data.name, "train_samples": n, "test_samples": len(tensors[3]), "batch_size": args.batch_size,
              "device": str(dev), "threads": torch.get_num_threads(), "noise_rate": args.noise_rate, "rounds": rounds,
              "plain_seconds": base, "goal": GOAL, "methods": {}}
    worst, widest, undecided = 0.0, 0.0, []
    for name in args.methods:
        r = ratio(times[name], times["plain"])
        worst, widest = max(worst, r.value), max(widest, r.half_width)
        verdict = "met" if r.high <= GOAL else "NOT met" if r.low > GOAL else "undecided"
        if verdict == "undecided":
            undecided.append(name)
        print(f"| harness, {name} | {statistics.median(times[name]):.3f} | {r} | +-{100 * r.half_width:.1f} % | {verdict} |")
        record["methods"][name] = {"seconds": statistics.median(times[name]), "ratio": r.value, "low": r.low,
                                   "high": r.high}
    if widest <= args.resolution:
        print(f"resolution: every interval within +-{100 * widest:.1f} % (target {100 * args.resolution:.0f} %): reached")
    else:
        print(f"resolution: could NOT resolve {100 * args.resolution:.0f} % in {rounds} rounds (widest interval "
              f"+-{100 * widest:.1f} %); more rounds (--repeats) or a quieter machine are needed")
    print(f"worst ratio {worst:.3f}x; " + (f"undecided against the goal: {', '.join(undecided)}" if undecided else
                                           f"{'meets' if worst <= GOAL else 'misses'} the goal (<= {GOAL:.2f}x for every method)"))
    started.write(args.json, "epoch", record, roles={"--data-dir": "MNIST_DIR"})


if __name__ == "__main__":
    main()
