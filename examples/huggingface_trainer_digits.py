"""SuperLoss or Data Parameters in a Hugging Face ``Trainer``, and the mislabelled samples it finds.

A small MLP (a plain ``nn.Module`` built here; nothing is downloaded) learns scikit-learn's digits
(1437 training images, 360 for validation) of which 40 % of the training labels were replaced by
random classes. The samples are dicts (``pixel_values``, ``labels``) and ``IndexedDataset`` adds
their ``index``. A ``Trainer`` subclass computes the loss: its ``compute_loss`` pops ``labels`` and
``index`` and applies, as ``--method`` says,

- ``superloss``: SuperLoss on the per-sample cross-entropy, or
- ``data-params``: the cross-entropy of the logits divided by the instance data parameters, which
  ``DataParametersCallback`` trains next to the Trainer's default AdamW,

both held by the model (``model.criterion``, ``model.dp``: they follow it to its device, into its
checkpoints and into ``eval()`` mode, where they change no state). It records each training batch
through ``RecorderCallback``, which writes ``OUT/signals.npz`` with the noise mask at the end;
``curriculoss flag OUT`` then ranks the training samples and scores the ranking (``OUT/flag.json``).

    python examples/huggingface_trainer_digits.py [--method superloss|data-params] [--epochs 10] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from curriculoss import DataParameters, IndexedDataset, SuperLoss, noise
from curriculoss.integrations.transformers import DataParametersCallback, RecorderCallback


class DictDataset(Dataset):
    """``{"pixel_values": x[i], "labels": y[i]}``, the samples a Trainer's default collator stacks."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x.astype(np.float32), y.astype(np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": int(self.y[i])}


def noisy_digits(noise_rate: float, seed: int) -> tuple[DictDataset, DictDataset, np.ndarray]:
    """(training set with noisy labels, clean validation set, mask of the changed training labels)."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.2, random_state=seed, stratify=y)
    noisy = noise.symmetric(y_train, noise_rate, num_classes=10, seed=seed)
    return DictDataset(x_train, noisy.labels), DictDataset(x_val, y_val), noisy.mask


class DigitsMLP(nn.Module):
    """An MLP on 8x8 digits holding its training criterion: SuperLoss or instance data parameters."""

    def __init__(self, num_samples: int, method: str = "superloss", hidden: int = 128):
        super().__init__()
        self.method = method
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))
        if method == "superloss":
            self.criterion = SuperLoss(tau="avg", lam=1.0, num_samples=num_samples)
        elif method == "data-params":
            self.dp = DataParameters(10, num_samples)
        else:
            raise ValueError(f"method must be 'superloss' or 'data-params', got {method!r}")

    def forward(self, pixel_values: torch.Tensor) -> dict:
        return {"logits": self.net(pixel_values)}

    def loss(self, logits, labels, index=None):
        """The method's loss and per-sample confidence (in eval mode: no state change, no index needed)."""
        if self.method == "superloss":
            return self.criterion(F.cross_entropy(logits, labels, reduction="none"), index), self.criterion.confidence
        return F.cross_entropy(self.dp(logits, labels, index), labels), self.dp.last_sigma


class NoisyLabelTrainer(Trainer):
    """A Trainer whose loss is the model's ``loss`` and which records each training batch."""

    def __init__(self, *args, recorder: RecorderCallback, **kwargs):
        super().__init__(*args, callbacks=[recorder, *kwargs.pop("callbacks", [])], **kwargs)
        self.recorder = recorder

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels, index = inputs.pop("labels"), inputs.pop("index", None)
        logits = model(**inputs)["logits"]
        loss, confidence = self.model.loss(logits, labels, index)
        if model.training:
            self.recorder.update(index, logits, labels, confidence=confidence)
        return (loss, {"logits": logits}) if return_outputs else loss


def accuracy(prediction) -> dict:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def run_flag(out: Path) -> dict:
    """``curriculoss flag OUT``: prints the ranking; returns its scores against the noise mask."""
    from curriculoss.harness.cli import main as curriculoss_cli

    code = curriculoss_cli(["flag", str(out)])
    if code:
        raise SystemExit(code)
    return json.loads((out / "flag.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("superloss", "data-params"), default="superloss")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output_dir: signals.npz and flag's outputs (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="huggingface_trainer_digits_"))
    hf_logging.set_verbosity_error()

    train, val, mask = noisy_digits(args.noise, args.seed)
    torch.manual_seed(args.seed)
    model = DigitsMLP(len(train), args.method)
    training_args = TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=64,
        per_device_eval_batch_size=256, learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", eval_strategy="no", remove_unused_columns=False, label_names=["labels"],
        disable_tqdm=True, seed=args.seed)
    trainer = NoisyLabelTrainer(
        model, training_args, train_dataset=IndexedDataset(train), eval_dataset=val, compute_metrics=accuracy,
        recorder=RecorderCallback(len(train), noise_mask=mask),
        callbacks=[DataParametersCallback(model.dp)] if args.method == "data-params" else [])
    trainer.train()
    metrics = trainer.evaluate()
    print(f"{args.method}, {args.epochs} epochs, {mask.sum()} of {len(mask)} training labels wrong: "
          f"validation accuracy {metrics['eval_accuracy']:.4f}\n")
    figures = run_flag(out)
    print(f"\nAUROC of the ranking against the known noise: {figures['auroc']:.4f}")
    return figures


if __name__ == "__main__":
    main()
