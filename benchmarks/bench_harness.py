"""The harness's CE epoch against a plain hand-written PyTorch loop, and imagefolder decoding throughput.

Harness: ``curriculoss.harness.train.train`` (method ``ce``, no run folder), whose per-epoch ``seconds`` cover
the training loop with its per-sample signal recording and the test-set evaluation. Plain loop: the
same data tensors, the same LeNet-5 initial weights, SGD, sample order and batch size, then the same
test-set accuracy; nothing else. The ratio of mean epoch times is printed (goal <= 1.05x).

imagefolder: PNG files written to a temporary folder (random 32x32 RGB images, 10 classes), then read
by ``datasets.load('imagefolder', workers=W)`` for W = 0, 1, 2 DataLoader worker processes: images per
second into memory. Then a CE epoch of LeNet-5 (batch 128, train + test accuracy) on that folder, with
the set in memory (``stream='no'``) and streamed (``stream='yes'``: decoded per batch by W = 0, 1, 2
DataLoader workers).

    python benchmarks/bench_harness.py --data-dir MNIST_DIR --limit 10000 --epochs 3 --repeats 3
    python benchmarks/bench_harness.py --data-dir MNIST_DIR --device cuda          # on a GPU

``MNIST_DIR`` is a folder holding the MNIST IDX files (plain or gzipped).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from curriculoss.harness import data as datasets
from curriculoss.harness.models import build_model
from curriculoss.harness.train import TrainConfig, resolve_device, train


def plain_loop(cfg: TrainConfig, data: datasets.Dataset, dev: torch.device) -> list[float]:
    x = torch.from_numpy(data.x_train).to(dev)
    y = torch.from_numpy(data.y_train).to(dev)
    xt = torch.from_numpy(data.x_test).to(dev)
    yt = torch.from_numpy(data.y_test).to(dev)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(data.input_shape), data.num_classes).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    times = []
    n = len(y)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).to(dev)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xt[i:i + 1024]).argmax(1) == yt[i:i + 1024]).sum() for i in range(0, len(xt), 1024))
        model.train()
        float(correct)
        times.append(time.perf_counter() - t0)
    return times


def imagefolder_throughput(n: int, workers: tuple[int, ...], epochs: int = 1, device: str = "cpu"):
    """Images/s loading into memory per worker count, and the mean CE epoch time in memory and streamed."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rates, epoch_times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            folder = Path(tmp) / f"class{i % 10}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        datasets.load("imagefolder", data_dir=tmp)  # warm: imports (scikit-learn's split) and the file cache
        for w in workers:
            t0 = time.perf_counter()
            d = datasets.load("imagefolder", data_dir=tmp, workers=w)
            rates[w] = (len(d.y_train) + len(d.y_test)) / (time.perf_counter() - t0)
        base = TrainConfig(dataset="imagefolder", data_dir=tmp, model="lenet", method="ce", epochs=epochs,
                           batch_size=128, lr=0.01, device=device)
        for label, kw in [("in memory", dict(stream="no"))] + [(f"streamed, {w} workers", dict(stream="yes", workers=w))
                                                                for w in workers]:
            results = train(TrainConfig(**{**base.__dict__, **kw}), None, progress=False)
            epoch_times[label] = results["seconds"] / epochs
    return rates, epoch_times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", metavar="MNIST_DIR", required=True, help="folder of the MNIST IDX files")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--images", type=int, default=2000, help="PNG files for the imagefolder throughput")
    p.add_argument("--image-epochs", type=int, default=1, help="epochs of the in-memory / streamed imagefolder runs")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="idx", data_dir=args.data_dir, limit=args.limit, model="lenet", method="ce",
                      epochs=args.epochs, batch_size=128, lr=0.01, device=args.device)
    dev = resolve_device(args.device)
    data = datasets.load("idx", data_dir=args.data_dir, limit=args.limit)
    # Alternated, so that load from other processes on the machine falls on both alike.
    plain, harness, total = [], [], 0.0
    for _ in range(args.repeats):
        plain += plain_loop(cfg, data, dev)
        t0 = time.perf_counter()
        results = train(cfg, None, progress=False)
        total = time.perf_counter() - t0
        harness.append(results["seconds"] / cfg.epochs)  # the mean of the harness's own per-epoch times
    plain_mean = statistics.fmean(plain)
    harness_mean = statistics.fmean(harness)
    print(f"device {dev}, LeNet-5, MNIST {args.limit} training images + {len(data.y_test)} test, batch 128, "
          f"{args.epochs} epochs x {args.repeats} repeats, 1 thread")
    print(f"plain loop epoch (train + test accuracy), mean: {plain_mean:.3f} s  (each: {', '.join(f'{t:.3f}' for t in plain)})")
    print(f"harness epoch, mean: {harness_mean:.3f} s  (per repeat: {', '.join(f'{t:.3f}' for t in harness)})  "
          f"ratio {harness_mean / plain_mean:.3f}x (goal <= 1.05x)")
    print(f"harness train() call including data loading and noise: {total:.2f} s")
    try:
        rates, epoch_times = imagefolder_throughput(args.images, (0, 1, 2), args.image_epochs, args.device)
        print(f"imagefolder load (PNG 32x32, {args.images} files, decode + resize + standardise), images/s: "
              + ", ".join(f"{w} workers {r:,.0f}" for w, r in rates.items()))
        print(f"imagefolder CE epoch (LeNet-5, batch 128, train + test), mean of {args.image_epochs}: "
              + ", ".join(f"{label} {t:.3f} s" for label, t in epoch_times.items()))
    except ImportError:
        print("imagefolder: Pillow not installed")


if __name__ == "__main__":
    main()
