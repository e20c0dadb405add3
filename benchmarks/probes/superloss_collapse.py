"""Why does SuperLoss with the paper's step collapse? Tau, the share of samples at the cap and the step size, step by step.

    OMP_NUM_THREADS=1 python benchmarks/probes/superloss_collapse.py [MNIST_DIR] [--seeds 0 1 2 3] [--epochs 2]

Trains LeNet-5 with PyTorch's default initialisation (``lenet-torchinit``) on the first 10,000 MNIST
images (or the MLP on digits when no MNIST directory is given), 0 % noise, SGD lr 0.1, momentum 0.9,
weight decay 5e-4, batch 64, cosine schedule over 15 epochs, once per variant and seed, and logs every
step:

- ``tau`` ('avg': the mean of every loss seen so far) and the batch mean of the (smoothed) losses the
  confidence is computed from;
- the share of the batch at the cap (beta <= -2/e, sigma* = e) and the batch mean sigma*;
- the L2 norm of the model's gradient.

Variants: ``ce``; ``paper`` (SuperLoss, tau 'avg', lam 1, smoothing 0.9, the mean of SL over the batch);
``normalised`` (the same SuperLoss, the batch's SL divided by its mean sigma*, a detached constant).
Writes ``superloss-collapse.png`` and ``probe.csv`` into ``docs/superloss-collapse/`` (or ``--out``);
``python benchmarks/render_tables.py import-probe OUT/probe.csv`` makes the result file of its table.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from curriculoss.harness import data as datasets
from curriculoss.harness.models import build_model
from curriculoss.superloss import SuperLoss

parser = argparse.ArgumentParser()
parser.add_argument("data_dir", nargs="?")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "superloss-collapse"))
parser.add_argument("--plot-only", action="store_true", help="redraw the figure from OUT/probe.csv")
args = parser.parse_args()
torch.set_num_threads(1)

if args.data_dir:
    data = datasets.load("idx", data_dir=args.data_dir, limit=10_000)
    model_name = "lenet-torchinit"
else:
    data = datasets.load("digits")
    model_name = "mlp"
x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
n, batch, schedule_epochs = len(y), 64, 15


def run(variant: str, seed: int) -> tuple[list[dict], float]:
    torch.manual_seed(seed)
    model = build_model(model_name, tuple(data.input_shape), data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=schedule_epochs)
    sl = SuperLoss(tau="avg", lam=1.0, num_samples=n, step="normalised" if variant == "normalised" else "paper")
    log, step = [], 0
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            ce = F.cross_entropy(model(x[idx]), y[idx], reduction="none")
            if variant == "ce":
                loss = ce.mean()
            else:
                loss = sl(ce, idx)
            opt.zero_grad()
            loss.backward()
            grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            opt.step()
            row = {"variant": variant, "seed": seed, "step": step, "epoch": epoch,
                   "batch_loss": float(ce.detach().mean()), "grad_norm": float(grad)}
            if variant != "ce":
                source = torch.where(sl.seen[idx], sl.smoothed_loss[idx], ce.detach().double())
                row.update(tau=float(sl.tau), source_mean=float(source.mean()),
                           cap_share=float(sl.at_cap.float().mean()), mean_sigma=float(sl.confidence.mean()))
            log.append(row)
            step += 1
        sched.step()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return log, acc


rows, finals = [], {}
out = Path(args.out)
if args.plot_only:
    with open(out / "probe.csv") as fh:
        rows = [{k: (v if k == "variant" else float(v) if v else math.nan) for k, v in r.items()} for r in csv.DictReader(fh)]
    finals = {(r["variant"], int(r["seed"])): float(r["test_acc"]) for r in rows if r["test_acc"] == r["test_acc"]}
    args.seeds = sorted({int(r["seed"]) for r in rows})
for seed in ([] if args.plot_only else args.seeds):
    for variant in ("ce", "paper", "normalised"):
        log, acc = run(variant, seed)
        log[-1]["test_acc"] = acc
        rows += log
        finals[variant, seed] = acc
        print(f"seed {seed} {variant:10s} test accuracy after {args.epochs} epochs: {acc:.4f}", flush=True)

out.mkdir(parents=True, exist_ok=True)
keys = ["variant", "seed", "step", "epoch", "batch_loss", "grad_norm", "tau", "source_mean", "cap_share", "mean_sigma",
        "test_acc"]
if not args.plot_only:
    with open(out / "probe.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

seed = args.seeds[0]
pick = lambda v: [r for r in rows if r["variant"] == v and int(r["seed"]) == seed]  # noqa: E731
fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
paper = pick("paper")
steps = [r["step"] for r in paper]
ax[0].plot(steps, [r["tau"] for r in paper], label="tau ('avg')")
ax[0].plot(steps, [r["source_mean"] for r in paper], label="batch mean of the smoothed loss", lw=0.7)
ax[0].plot(steps, [r["tau"] - 2 / math.e for r in paper], "k:", lw=0.8, label="tau - 2/e (the cap, lam 1)")
peak = max(paper, key=lambda r: r["source_mean"])
ax[0].annotate(f"batch mean {peak['source_mean']:.0f} at step {peak['step']:.0f}", (peak["step"], 7.5), fontsize=7)
ax[0].set(xlabel="step", ylabel="loss", ylim=(0, 8), title=f"paper SuperLoss, seed {seed}: threshold vs losses")
ax[0].legend(fontsize=7)
ax[1].plot(steps, [r["cap_share"] for r in paper], label="share of the batch at sigma* = e")
ax[1].plot(steps, [r["mean_sigma"] / math.e for r in paper], label="mean sigma* / e", lw=0.7)
ax[1].set(xlabel="step", ylim=(0, 1.05), title="confidence")
ax[1].legend(fontsize=7)
for v in ("ce", "paper", "normalised"):
    r = pick(v)
    ax[2].semilogy([q["step"] for q in r], [q["grad_norm"] for q in r], lw=0.6,
                   label=f"{v} (test acc {finals[v, seed]:.2f})")
ax[2].set(xlabel="step", ylabel="gradient L2 norm", title="the step")
ax[2].legend(fontsize=7)
fig.tight_layout()
fig.savefig(out / "superloss-collapse.png", dpi=100)
print(f"written: {out / 'superloss-collapse.png'}, {out / 'probe.csv'}")
