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

import argparse
import time

import statistics

import torch
import torch.nn.functional as F

from _results import load_average, write_result
from _timing import interleaved_samples, load_note, ratio, spread

from curriculoss import SuperLoss, focal_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--json", help="also write the figures, command, machine and date to this file")
    args = parser.parse_args()
    load_before, t_start = load_average(), time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    def ce_alone() -> None:
        per_anchor = F.cross_entropy(logits, target, reduction="none")
        loss = (per_anchor * keep).sum() / keep.sum()
        logits.grad = None
        loss.backward()

    def with_superloss(crit: SuperLoss):
        def run() -> None:
            per_anchor = focal_loss(logits, target, reduction="none").reshape(images, per_image)
            loss = crit(per_anchor, mask=ignore)
            logits.grad = None
            loss.backward()
        return run

    fns = {"focal": focal_alone, "ce": ce_alone, "sl": with_superloss(criterion)}
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
            "ms": 1e3 * statistics.median(times[name]), "ratio": r.value, "low": r.low, "high": r.high, "goal": 1.05}
        print(f"focal + SuperLoss{' fused' if name == 'sl_fused' else ''}    : {spread(times[name])}; ratio {r} "
              f"(95 % CI; goal <= 1.05x)")
    if args.json:
        write_result(args.json, "detection", record, load_before=load_before, wall_seconds=time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
