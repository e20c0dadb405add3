"""Find mislabelled samples from your own training loop, with curriculoss.recorder.Recorder.

A plain PyTorch loop (an MLP, SGD, cosine schedule) trains on scikit-learn's digits with a share of
symmetric label noise. Three lines feed the recorder: create it with the number of training samples,
``update`` it per batch with the batch's sample indices, logits and labels, close each epoch. Its
``signals.npz`` is what ``curriculoss train`` writes, so ``curriculoss flag`` reads it; here the
library's functions rank the samples directly, and the known noise mask scores the ranking.

The loop is the one ``curriculoss train --method ce`` runs (same data, noise, initialisation and sample
order for a seed), so it flags the same samples as that command (tests/test_recorder.py checks it).

    python examples/flag_own_loop.py [--noise 0.4] [--epochs 20] [--out DIR]
    curriculoss flag DIR        # the same ranking from the command line
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curriculoss import flag, noise
from curriculoss.harness import data as datasets
from curriculoss.recorder import Recorder


def train_and_record(epochs: int = 20, noise_rate: float = 0.4, seed: int = 0, batch_size: int = 64,
                     lr: float = 0.1) -> tuple[Recorder, np.ndarray]:
    """Train on noisy digits; returns the recorder and the true noise mask."""
    data = datasets.load("digits")
    noisy = noise.apply("symmetric", data.y_train, noise_rate, num_classes=data.num_classes, seed=seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(np.asarray(noisy.labels)).long()
    n = len(y)

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, data.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    recorder = Recorder(n)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            logits = model(x[index])
            loss = F.cross_entropy(logits, y[index], reduction="none")
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            recorder.update(index, logits, y[index], loss=loss)  # per batch: device tensors, no host sync
        scheduler.step()
        recorder.end_epoch()
    return recorder, np.asarray(noisy.mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for signals.npz (default: a temporary one)")
    args = parser.parse_args()

    recorder, noise_mask = train_and_record(args.epochs, args.noise, args.seed)
    out = Path(args.out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    recorder.save(out / "signals.npz", noise_mask=noise_mask)

    signals = np.load(out / "signals.npz")
    score, scores = flag.run_scores(signals)  # the default: AUM over the early-learning epochs
    suspects = flag.find_label_issues(scores, score=score, return_indices_ranked_by_score=True)
    figures = flag.evaluate(scores, noise_mask, score=score)
    print(f"{len(scores)} samples, {int(noise_mask.sum())} labels changed; {len(suspects)} flagged "
          f"(score {score!r}, epochs 1-{flag.select_epochs(signals['margin'])} of {args.epochs})")
    print(f"most suspicious: {suspects[:10].tolist()}")
    print(f"AUROC {figures['auroc']:.4f}, AP {figures['average_precision']:.4f}, precision at k "
          f"{figures['precision_at_k']:.4f}, precision of the flagged {figures['precision_at_estimate']:.4f}")
    print(f"signals: {out / 'signals.npz'}  (curriculoss flag {out})")


if __name__ == "__main__":
    main()
