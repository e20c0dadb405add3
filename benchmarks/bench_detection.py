"""What does SuperLoss add to a focal loss over detection anchors? (focal + SuperLoss) / (focal alone).

200,000 anchors (2 images x 100,000), 80 classes, a focal loss per anchor (RetinaNet style), 10 %
ignored anchors; SuperLoss with tau='avg', no per-anchor state; forward + backward, CPU. Interleaved
repetitions; the ratio is the median of the per-round ratios with a 95 % bootstrap interval.
``--fused`` adds ``SuperLoss(..., fused=True)``. For reference, plain cross-entropy over the same
anchors runs in the same rounds: what the focal loss itself costs over CE.

    python benchmarks/bench_detection.py

``--json FILE`` writes the figures with the command, the machine and the date.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from _results import begin, parser
from _timing import interleaved_samples, load_note, ratio, spread

from curriculoss import SuperLoss, focal_loss

GOAL = 1.05  # (focal + SuperLoss) / focal alone


def main() -> None:
    p = parser(__doc__, repeats=30, threads=0)
    p.add_argument("--anchors", type=int, default=200_000)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--fused", action="store_true", help="also SuperLoss(fused=True) (compiles first)")
    args = p.parse_args()
    started = begin(args)
    images = 2
    per_image = args.anchors // images
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(images * per_image, args.classes, generator=g, requires_grad=True)
    target = torch.randint(0, args.classes, (images * per_image,), generator=g)
    ignore = torch.rand(images, per_image, generator=g) < 0.1
    keep = ~ignore.reshape(-1)
    criterion = SuperLoss(tau="avg", lam=1.0)

    def backward(loss: torch.Tensor) -> None:
        logits.grad = None
        loss.backward()

    def kept_mean(loss_fn):  # the loss per anchor, averaged over the anchors kept
        return lambda: backward((loss_fn(logits, target, reduction="none") * keep).sum() / keep.sum())

    def with_superloss(crit: SuperLoss):
        return lambda: backward(crit(focal_loss(logits, target, reduction="none").reshape(images, per_image),
                                     mask=ignore))

    fns = {"focal": kept_mean(focal_loss), "ce": kept_mean(F.cross_entropy), "sl": with_superloss(criterion)}
    if args.fused:
        fns["sl_fused"] = with_superloss(SuperLoss(tau="avg", lam=1.0, fused=True))
        t0 = time.perf_counter()
        fns["sl_fused"]()
        print(f"fused: first call {time.perf_counter() - t0:.1f} s (compilation included)")
    times = interleaved_samples(fns, args.repeats, warmup=3)
    print(f"{args.anchors} anchors, {args.classes} classes, CPU, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved rounds; {load_note()}")
    print(f"focal alone          : {spread(times['focal'])} (forward + backward)")
    print(f"CE alone (reference) : {spread(times['ce'])}; focal / CE {ratio(times['focal'], times['ce'])}")
    record = {"anchors": args.anchors, "classes": args.classes, "rounds": args.repeats, "threads": torch.get_num_threads(),
              "focal_ms": 1e3 * statistics.median(times["focal"]), "ce_ms": 1e3 * statistics.median(times["ce"]),
              "variants": {}}
    for name in [k for k in fns if k not in ("focal", "ce")]:
        r = ratio(times[name], times["focal"])
        record["variants"]["fused" if name == "sl_fused" else "eager"] = {
            "ms": 1e3 * statistics.median(times[name]), "ratio": r.value, "low": r.low, "high": r.high, "goal": GOAL}
        print(f"focal + SuperLoss{' fused' if name == 'sl_fused' else ''}    : {spread(times[name])}; ratio {r} "
              f"(95 % CI; goal <= {GOAL:.2f}x)")
    started.write(args.json, "detection", record)


if __name__ == "__main__":
    main()
