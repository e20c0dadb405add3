"""SuperLoss or Data Parameters in a Hugging Face ``Trainer``, and the mislabelled samples it finds.

A small MLP (a plain ``nn.Module`` built here; nothing is downloaded) learns scikit-learn's digits
(1437 training images, 360 for validation) of which 40 % of the training labels were replaced by
random classes. The samples are dicts (``pixel_values``, ``labels``) and ``IndexedDataset`` adds
their ``index``. A ``Trainer`` subclass computes the loss: its ``compute_loss`` takes ``labels`` and
``index`` out of the inputs and applies, as ``--method`` says,

- ``superloss``: SuperLoss on the per-sample cross-entropy, or
- ``data-params``: the cross-entropy of the logits divided by the instance data parameters, which
  ``DataParametersCallback`` trains next to the Trainer's default AdamW,

either held by the model (``model.criterion``: it follows it to its device, into its
checkpoints and into ``eval()`` mode, where it changes no state). It records each training batch
through ``RecorderCallback``, which writes ``OUT/signals.npz`` with the noise mask at the end;
``curriculoss flag OUT`` then ranks the training samples and scores the ranking (``OUT/flag.json``).

    python examples/huggingface_trainer_digits.py [--method superloss|data-params] [--epochs 10] [--out DIR]
"""

import argparse
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import Dataset
from transformers import HfArgumentParser, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from curriculoss import DataParameters, IndexedDataset, SuperLoss, noise
from curriculoss.harness.cli import main as curriculoss_cli
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

    def __init__(self, criterion: SuperLoss | DataParameters, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))
        self.criterion = criterion  # a submodule: it follows the model to its device, checkpoints and eval()

    def forward(self, pixel_values: torch.Tensor) -> dict:
        return {"logits": self.net(pixel_values)}

    def loss(self, logits, labels, index=None):
        """The method's loss and per-sample confidence (in eval mode: no state change, no index needed)."""
        if isinstance(self.criterion, SuperLoss):
            return self.criterion(F.cross_entropy(logits, labels, reduction="none"), index), self.criterion.confidence
        return F.cross_entropy(self.criterion(logits, labels, index), labels), self.criterion.last_sigma


class NoisyLabelTrainer(Trainer):
    """A Trainer whose loss is the model's ``loss`` and which records each training batch."""

    def __init__(self, *args, recorder: RecorderCallback, **kwargs):
        super().__init__(*args, callbacks=[recorder, *kwargs.pop("callbacks", [])], **kwargs)
        self.recorder = recorder

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, index = inputs["labels"], inputs.get("index")
        logits = model(**{k: v for k, v in inputs.items() if k not in ("labels", "index")})["logits"]
        loss, confidence = self.model.loss(logits, labels, index)
        if model.training:
            self.recorder.update(index, logits, labels, confidence=confidence)
        return (loss, {"logits": logits}) if return_outputs else loss


def accuracy(prediction) -> dict:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


@dataclass
class ExampleArguments:
    """This script's options, parsed by ``HfArgumentParser`` as a Hugging Face script parses its own."""

    method: str = field(default="superloss", metadata={"choices": ("superloss", "data-params")})
    epochs: int = 10
    noise: float = 0.4
    seed: int = 0
    out: str | None = field(
        default=None, metadata={"help": "output_dir: signals.npz and flag's outputs (default: a temporary folder)"})


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(ExampleArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="huggingface_trainer_digits_"))
    hf_logging.set_verbosity_error()

    train, val, mask = noisy_digits(args.noise, args.seed)
    torch.manual_seed(args.seed)
    if args.method == "superloss":
        criterion = SuperLoss(tau="avg", lam=1.0, num_samples=len(train))
    else:
        criterion = DataParameters(10, len(train))
    model = DigitsMLP(criterion)
    training_args = TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=64,
        per_device_eval_batch_size=256, learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", eval_strategy="no", remove_unused_columns=False, label_names=["labels"],
        disable_tqdm=True, seed=args.seed)
    trainer = NoisyLabelTrainer(
        model, training_args, train_dataset=IndexedDataset(train), eval_dataset=val, compute_metrics=accuracy,
        recorder=RecorderCallback(len(train), noise_mask=mask),
        callbacks=[DataParametersCallback(criterion)] if args.method == "data-params" else [])
    trainer.train()
    metrics = trainer.evaluate()
    print(f"{args.method}, {args.epochs} epochs, {mask.sum()} of {len(mask)} training labels wrong: "
          f"validation accuracy {metrics['eval_accuracy']:.4f}\n")
    # `curriculoss flag OUT` prints the ranking and writes its scores against the noise mask to OUT/flag.json
    if curriculoss_cli(["flag", str(out)]) != 0:
        raise SystemExit("curriculoss flag failed: see its message above")
    figures = json.loads((out / "flag.json").read_text())
    print(f"\nAUROC of the ranking against the known noise: {figures['auroc']:.4f}")
    return figures


if __name__ == "__main__":
    main()
