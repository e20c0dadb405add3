"""How fast does the harness read an image folder, and what does streaming it cost an epoch?

PNG files written to a temporary folder (random 32x32 RGB images, 10 classes), then read by
``curriculoss.harness.data.load('imagefolder', workers=W)`` for each W of ``--workers`` DataLoader
worker processes: images per second into memory (decode, resize, standardise). Then a one-epoch
``curriculoss train`` run of LeNet-5 with CE (batch 128, training and test accuracy) on that folder,
with the set in memory (``stream='no'``) and streamed (``stream='yes'``: decoded per batch by W
workers): its epoch seconds.

    python benchmarks/bench_imagefolder.py                       # 2,000 images, 0, 1 and 2 workers
    python benchmarks/bench_imagefolder.py --device cuda         # on a GPU

``--json FILE`` writes the figures with the command, the machine and the date. Needs Pillow.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _results import begin, parser

from curriculoss.harness import data as datasets
from curriculoss.harness.config import TrainConfig
from curriculoss.harness.train import train


def write_images(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` random 32x32 RGB PNG files in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"class{i % 10}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(sub / f"{i}.png")


def main() -> None:
    p = parser(__doc__, threads=(1, "torch threads"))
    p.add_argument("--images", type=int, default=2000, help="PNG files written")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    p.add_argument("--epochs", type=int, default=1, help="epochs of each in-memory / streamed run")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    started = begin(args)
    rates, epochs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.images)
        datasets.load("imagefolder", data_dir=tmp)  # warm: imports (scikit-learn's split) and the file cache
        for w in args.workers:
            t0 = time.perf_counter()
            d = datasets.load("imagefolder", data_dir=tmp, workers=w)
            rates[w] = (len(d.y_train) + len(d.y_test)) / (time.perf_counter() - t0)
        base = TrainConfig(dataset="imagefolder", data_dir=tmp, model="lenet", method="ce", epochs=args.epochs,
                           batch_size=128, lr=0.01, device=args.device)
        runs = [("in memory", {"stream": "no"})] + [(f"streamed, {w} workers", {"stream": "yes", "workers": w})
                                                    for w in args.workers]
        for label, change in runs:
            results = train(replace(base, **change), None, progress=False)
            epochs[label] = results["seconds"] / args.epochs
    print(f"imagefolder load (PNG 32x32, {args.images} files, decode + resize + standardise), images/s: "
          + ", ".join(f"{w} workers {r:,.0f}" for w, r in rates.items()))
    print(f"imagefolder CE epoch (LeNet-5, batch 128, train + test, {args.device}), mean of {args.epochs}: "
          + ", ".join(f"{label} {t:.3f} s" for label, t in epochs.items()))
    started.write(args.json, "imagefolder", {
        "images": args.images, "epochs": args.epochs, "device": args.device, "threads": args.threads,
        "load_images_per_second": {str(w): r for w, r in rates.items()}, "epoch_seconds": epochs})

if __name__ == "__main__":
    main()
