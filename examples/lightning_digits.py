"""SuperLoss or Data Parameters in a Lightning module, and the mislabelled samples it finds.

A small MLP learns scikit-learn's digits (1437 training images, 360 for validation) of which 40 % of
the training labels were replaced by random classes (symmetric noise). The LightningModule trains with
``AdamW(self.parameters())`` under automatic optimization, on one of:

- ``--method superloss``: SuperLoss on the per-sample cross-entropy (its state in the module's buffers);
- ``--method data-params``: instance data parameters, a submodule ``self.dp`` trained by
  ``DataParametersCallback`` (``AdamW(self.parameters())`` never sees them).

``IndexedDataset`` gives every batch its samples' indices, ``RecorderCallback`` records the per-sample
signals from what ``training_step`` returns and writes ``OUT/signals.npz`` with the noise mask, and
``curriculoss flag OUT`` then ranks the training samples and scores the ranking (``OUT/flag.json``).
The validation step calls the same criterion: in ``eval()`` mode it changes no state and needs no index.

    python examples/lightning_digits.py [--method superloss|data-params] [--epochs 10] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from curriculoss import DataParameters, IndexedDataset, SuperLoss, noise
from curriculoss.integrations.lightning import DataParametersCallback, RecorderCallback


def noisy_digits(noise_rate: float, seed: int) -> tuple[TensorDataset, TensorDataset, np.ndarray]:
    """(training set with noisy labels, clean validation set, mask of the changed training labels)."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x.astype(np.float32) / 16.0, y, test_size=0.2,
                                                      random_state=seed, stratify=y)
    noisy = noise.symmetric(y_train, noise_rate, num_classes=10, seed=seed)
    train = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(noisy.labels).long())
    val = TensorDataset(torch.from_numpy(x_val), torch.from_numpy(y_val).long())
    return train, val, noisy.mask


class DigitsClassifier(L.LightningModule):
    """An MLP trained with SuperLoss or instance data parameters on ``(x, y, index)`` batches."""

    def __init__(self, num_samples: int, method: str = "superloss", lr: float = 1e-3, hidden: int = 128):
        super().__init__()
        self.method, self.lr = method, lr
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))
        if method == "superloss":
            self.criterion = SuperLoss(tau="avg", lam=1.0, num_samples=num_samples)
        elif method == "data-params":
            self.dp = DataParameters(10, num_samples)
        else:
            raise ValueError(f"method must be 'superloss' or 'data-params', got {method!r}")

    def loss(self, logits, y, index=None):
        """The method's loss and per-sample confidence (in eval mode: no state change, no index needed)."""
        if self.method == "superloss":
            loss = self.criterion(F.cross_entropy(logits, y, reduction="none"), index)
            return loss, self.criterion.confidence
        return F.cross_entropy(self.dp(logits, y, index), y), self.dp.last_sigma

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        logits = self.net(x)
        loss, confidence = self.loss(logits, y, index)
        return {"loss": loss, "logits": logits.detach(), "confidence": confidence}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss, _ = self.loss(logits, y)
        self.log_dict({"val_loss": loss, "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def run_flag(out: Path) -> dict:
    """``curriculoss flag OUT``: prints the ranking and its AUROC; returns its scores against the noise mask."""
    from curriculoss.harness.cli import main as curriculoss_cli

    code = curriculoss_cli(["flag", str(out)])
    if code:
        raise SystemExit(code)
    figures = json.loads((out / "flag.json").read_text())
    print(f"\nAUROC of the ranking against the known noise: {figures['auroc']:.4f}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("superloss", "data-params"), default="superloss")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for signals.npz and flag's outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="lightning_digits_"))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    train, val, mask = noisy_digits(args.noise, args.seed)
    torch.manual_seed(args.seed)
    model = DigitsClassifier(len(train), args.method)
    callbacks = [RecorderCallback(len(train), out, noise_mask=mask)]
    if args.method == "data-params":
        callbacks.append(DataParametersCallback(model.dp))
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=out, callbacks=callbacks)
    trainer.fit(model, DataLoader(IndexedDataset(train), batch_size=64, shuffle=True),
                DataLoader(val, batch_size=256))
    print(f"{args.method}, {args.epochs} epochs, {mask.sum()} of {len(mask)} training labels wrong: "
          f"validation accuracy {float(trainer.callback_metrics['val_acc']):.4f}\n")
    return run_flag(out)


if __name__ == "__main__":
    main()
