"""IMAE's cost: a LeNet-5 training step with IMAE / the same step with plain cross-entropy, CPU.

Batch 128 of 28x28 images, 10 classes; a step is zero_grad, forward, loss, backward and an SGD update.
The two steps alternate (interleaved repeats) and the median of each is compared. Goal: <= 1.02x.

Also printed, for information: the losses alone (forward + backward on the (128, 10) logits), and the
focal loss over 200,000 anchors x 80 classes against F.cross_entropy on the same logits.

    python benchmarks/bench_imae.py            # full run
    python benchmarks/bench_imae.py --quick    # a few seconds
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F

from _timing import interleaved

from curriculoss.focal import focal_loss
from curriculoss.imae import imae
from curriculoss.harness.models import LeNet5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--T", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--anchors", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, fewer anchors")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.anchors = 30, 20_000
    torch.manual_seed(0)

    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    model = LeNet5(in_channels=1, num_classes=10, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        return run

    steps = interleaved({"ce": step(F.cross_entropy), "imae": step(lambda z, t: imae(z, t, T=args.T))}, args.repeats)
    ratio = steps["imae"] / steps["ce"]
    print(f"LeNet-5 step, batch {args.batch}, 28x28, CPU, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats, median")
    print(f"  plain CE step     : {1e3 * steps['ce']:.3f} ms")
    print(f"  IMAE (T={args.T:g}) step : {1e3 * steps['imae']:.3f} ms")
    print(f"  ratio IMAE / CE   : {ratio:.3f}x (goal <= 1.02x: {'met' if ratio <= 1.02 else 'NOT met'})")

    z = torch.randn(args.batch, 10, requires_grad=True)

    def alone(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            z.grad = None
            loss_fn(z, y).backward()
        return run

    losses = interleaved({"ce": alone(F.cross_entropy), "imae": alone(lambda a, b: imae(a, b, T=args.T))}, args.repeats)
    print(f"losses alone, ({args.batch}, 10) logits, forward + backward: CE {1e6 * losses['ce']:.1f} us, "
          f"IMAE {1e6 * losses['imae']:.1f} us (difference {1e6 * (losses['imae'] - losses['ce']):.1f} us per step)")

    za = torch.randn(args.anchors, 80, requires_grad=True)
    ya = torch.randint(0, 80, (args.anchors,))

    def anchors(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            za.grad = None
            loss_fn(za, ya).backward()
        return run

    dense = interleaved({"ce": anchors(F.cross_entropy), "focal": anchors(lambda a, b: focal_loss(a, b, gamma=2.0))},
                        max(5, args.repeats // 20), warmup=2)
    print(f"{args.anchors} anchors x 80 classes, forward + backward: CE {1e3 * dense['ce']:.2f} ms, "
          f"focal {1e3 * dense['focal']:.2f} ms ({dense['focal'] / dense['ce']:.3f}x)")


if __name__ == "__main__":
    main()
