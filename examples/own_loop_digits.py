"""SuperLoss, Data Parameters or IMAE in a plain PyTorch loop, with the command line's settings.

A user's own loop, written from docs/own-loop.md with the public library only (no
``curriculoss.harness``): scikit-learn's 8x8 digits, 40 % symmetric label noise from
``curriculoss.noise``, the training set wrapped in ``curriculoss.IndexedDataset``, an MLP, SGD with a
cosine schedule, the chosen method, and a ``curriculoss.Recorder`` whose ``signals.npz`` the command
line's ``curriculoss flag`` reads. Every setting is the one ``curriculoss train`` uses for the same
``--method``, ``--noise-rate``, ``--seed`` and ``--epochs`` (split, noisy labels, initialisation and
sample order included), so the two end at the same test accuracy; tests/test_own_loop.py checks it.

    python examples/own_loop_digits.py --method superloss --seed 0 --out runs/own-sl
    curriculoss flag runs/own-sl          # rank the training samples most likely mislabelled
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import curriculoss
from curriculoss import noise

METHODS = ("superloss", "data-params", "imae")


def load_noisy_digits(noise_rate: float, seed: int):
    """The digits as ``curriculoss train`` reads them: a stratified 75/25 split (``random_state=0``),
    pixels scaled to [0, 1] and standardised by the training set's mean and standard deviation, and
    symmetric noise on the training labels seeded with the run's seed."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    mean = np.float32(x_train.mean(dtype=np.float64))
    std = np.float32(x_train.std(dtype=np.float64))
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    noisy = noise.symmetric(y_train, noise_rate, num_classes=10, seed=seed)  # the new class may be the true one
    return x_train, y_train, x_test, y_test, noisy


def mlp(in_features: int = 64, num_classes: int = 10) -> nn.Module:
    """The command line's ``mlp``: 64-256-256-10 with ReLUs, PyTorch's default initialisation."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, num_classes))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS, default="superloss")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise, the initialisation and the order")
    parser.add_argument("--noise-rate", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", help="folder for signals.npz (default: a new temporary folder)")
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test, noisy = load_noisy_digits(args.noise_rate, args.seed)
    n = len(y_train)
    train_set = curriculoss.IndexedDataset(
        TensorDataset(torch.from_numpy(x_train), torch.from_numpy(noisy.labels)))  # yields (x, y, index)
    # The command line's order: epoch e is a permutation drawn from a generator seeded seed * 100003 + e.
    order = torch.Generator()
    loader = DataLoader(train_set, batch_size=64, sampler=RandomSampler(train_set, generator=order))

    torch.manual_seed(args.seed)  # the initialisation
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    optimizers = [optimizer]  # and, with data parameters, their own
    if args.method == "superloss":
        criterion = curriculoss.SuperLoss(tau="avg", lam=1.0, num_samples=n)  # step="normalised", smoothing 0.9
    elif args.method == "data-params":
        dp = curriculoss.DataParameters(num_classes=10, num_instances=n)  # level="instance"
        optimizers.append(dp.optimizer())  # SparseSGD: class lr 0.1, instance lr 1, momentum 0.9
    else:
        criterion = curriculoss.IMAE(T=8.0, reduction="none")

    recorder = curriculoss.Recorder(n)
    for epoch in range(args.epochs):
        order.manual_seed(args.seed * 100_003 + epoch)
        for x, y, index in loader:
            logits = model(x)
            recorded = None  # the per-sample loss the recorder keeps (default: the cross-entropy)
            if args.method == "superloss":
                loss = criterion(F.cross_entropy(logits, y, reduction="none"), index)
                confidence = criterion.confidence  # sigma* of the batch
            elif args.method == "data-params":
                loss = F.cross_entropy(dp(logits, y, index), y)
                confidence = dp.last_sigma  # the batch's instance parameters, as the forward used them
            else:
                recorded = criterion(logits, y)  # the MAE value 2 (1 - p_y), IMAE's gradient
                loss = recorded.mean()
                confidence = criterion.confidence  # exp(T p_y (1 - p_y))
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
            recorder.update(index, logits, y, confidence=confidence, loss=recorded)
        scheduler.step()
        recorder.end_epoch()

    model.eval()
    with torch.no_grad():  # data parameters exist for training samples only: the test set uses the logits
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    accuracy = float((predicted == y_test).mean())

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="own-loop-"))
    recorder.save(out, labels=noisy.labels, true_labels=y_train, noise_mask=noisy.mask)
    print(f"{args.method}, noise {args.noise_rate:g} (realised {noisy.rate:.3f}), seed {args.seed}, "
          f"{args.epochs} epochs: final test accuracy {accuracy:.4f}")
    print(f"signals: {out / 'signals.npz'}  (curriculoss flag {out})")
    return {"method": args.method, "seed": args.seed, "noise_rate": args.noise_rate, "epochs": args.epochs,
            "final": accuracy, "realised_noise_rate": noisy.rate, "out": str(out)}


if __name__ == "__main__":
    main()
