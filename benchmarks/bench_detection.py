"""SuperLoss over detection anchors: (focal + SuperLoss) / (focal alone), forward + backward, CPU.

200,000 anchors (2 images x 100,000), 80 classes, a focal loss per anchor (RetinaNet style), 10 %
ignored anchors; SuperLoss with tau='avg', no per-anchor state. Interleaved repetitions, median.

    python benchmarks/bench_detection.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from curriculoss import SuperLoss, focal_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = 2
    per_image = args.anchors // images
    logits = torch.randn(images * per_image, args.classes, requires_grad=True)
    target = torch.randint(0, args.classes, (images * per_image,))
    ignore = torch.rand(images, per_image) < 0.1
    keep = ~ignore.reshape(-1)
    criterion = SuperLoss(tau="avg", lam=1.0)

    def focal_alone() -> None:
        per_anchor = focal_loss(logits, target, reduction="none")
        loss = (per_anchor * keep).sum() / keep.sum()
        logits.grad = None
        loss.backward()

    def with_superloss() -> None:
        per_anchor = focal_loss(logits, target, reduction="none").reshape(images, per_image)
        loss = criterion(per_anchor, mask=ignore)
        logits.grad = None
        loss.backward()

    for _ in range(3):
        focal_alone()
        with_superloss()
    times: dict[str, list[float]] = {"focal": [], "sl": []}
    for _ in range(args.repeats):
        for name, fn in (("focal", focal_alone), ("sl", with_superloss)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["focal"]), statistics.median(times["sl"])
    print(f"{args.anchors} anchors, {args.classes} classes, CPU, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(f"focal alone          : {1e3 * a:.2f} ms (median, forward + backward)")
    print(f"focal + SuperLoss    : {1e3 * b:.2f} ms")
    print(f"ratio SuperLoss/focal: {b / a:.3f}x (goal <= 1.10x)")


if __name__ == "__main__":
    main()
