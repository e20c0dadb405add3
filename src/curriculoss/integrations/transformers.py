"""Hugging Face `Trainer` callbacks: record the per-sample signals for `curriculoss flag`, and train
data parameters.

Install with `pip install "curriculoss[huggingface]"`. The `Trainer` hands its callbacks neither the
batches nor the logits, so the recording is done where the loss is computed: a `Trainer` subclass
whose `compute_loss` calls `update` (samples from
`IndexedDataset` carry an `"index"` key)::

    class NoisyLabelTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels, index = inputs.pop("labels"), inputs.pop("index", None)
            logits = model(**inputs)["logits"]
            loss = criterion(F.cross_entropy(logits, labels, reduction="none"), index)  # SuperLoss
            if model.training:
                recorder.update(index, logits, labels, confidence=criterion.confidence)
            return (loss, {"logits": logits}) if return_outputs else loss

    recorder = RecorderCallback(len(train_set), noise_mask=mask)     # OUTPUT_DIR/signals.npz at the end
    trainer = NoisyLabelTrainer(model, TrainingArguments(OUTPUT_DIR, remove_unused_columns=False, ...),
                                train_dataset=IndexedDataset(train_set), callbacks=[recorder])
    # + DataParametersCallback(model.dp) for data parameters held by the model

`remove_unused_columns=False` keeps the `"index"` key, which the model's `forward` does not take.
The module is named after the library it integrates; `import transformers` elsewhere is unaffected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from curriculoss.integrations import _DataParametersStep, _Recording, _require

_transformers = _require(("transformers",), "huggingface", "curriculoss.integrations.transformers")
TrainerCallback = _transformers.TrainerCallback

__all__ = ["RecorderCallback", "DataParametersCallback"]

#: The file each callback writes into a `checkpoint-*` folder of the Trainer (see `load_checkpoint`).
RECORDER_FILE = "curriculoss_recorder.pt"
DATA_PARAMETERS_FILE = "curriculoss_data_parameters.pt"


def _save_in_checkpoint(args, state, contents: dict, name: str) -> None:
    """Write `contents` into the Trainer's checkpoint folder of this step (the main process only)."""
    if state.is_world_process_zero:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(contents, folder / name)


class RecorderCallback(_Recording, TrainerCallback):
    """Records each training sample's loss, confidence and margin, per epoch, for `curriculoss flag`.

    Batches are recorded by the `compute_loss` of a `Trainer` subclass calling `update`
    (training batches only: `compute_loss` also runs for evaluation). The callback closes an epoch
    at `on_epoch_end` and writes `signals.npz` at `on_train_end` (by default into
    `args.output_dir`; rank 0 only under distributed training, where the epochs gather every rank's
    samples). At `on_save` it writes its state into the checkpoint folder (`RECORDER_FILE`); to
    resume, call `load_checkpoint` on that folder before `trainer.train(resume_from_checkpoint=...)`.

    Args:
        num_samples: the number of training samples; indices are in `[0, num_samples)`.
        path: where to write `signals.npz` (a file or a folder); default `args.output_dir`.
            After training, `saved_path` says where it went.
        noise_mask: the known wrong labels (bool, `(num_samples,)`), saved for `flag` to score its
            ranking; `extra`: more arrays to save (e.g. `{"true_labels": y}`).
        stream: write each epoch into `path/signals` as it closes (`Recorder(path=...)`), so that memory
            does not grow with the epochs; `path` is then needed, and a resumed run must use the same one.
    """

    def update(self, index, logits: Tensor, labels: Tensor, confidence: Tensor | None = None,
               loss: Tensor | None = None) -> None:
        """Record one training batch (see `update`)."""
        self.recorder.update(index, logits, labels, confidence=confidence, loss=loss)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.recorder.end_epoch()

    def on_train_end(self, args, state, control, **kwargs):
        self.saved_path = self.save(self.path if self.path is not None else Path(args.output_dir))

    def on_save(self, args, state, control, **kwargs):
        _save_in_checkpoint(args, state, self.state_dict(), RECORDER_FILE)

    def state_dict(self) -> dict[str, Tensor]:
        """The recorded epochs and the batches of the epoch in progress (tensors only)."""
        return self.recorder.state_dict(open_epoch=True)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.recorder.load_state_dict(state)

    def load_checkpoint(self, folder: str | Path) -> None:
        """Load the state that `on_save` wrote into a `checkpoint-*` folder."""
        self.load_state_dict(torch.load(Path(folder) / RECORDER_FILE, weights_only=True))


class DataParametersCallback(_DataParametersStep, TrainerCallback):
    """Trains `DataParameters` with their own optimizer next to the Trainer's.

    The data parameters are not in `model.parameters()`, so the Trainer's optimizer, its gradient
    clipping and its `model.zero_grad()` never reach them. This callback creates
    `data_parameters.optimizer(**optimizer_kwargs)` (a `SparseSGD`) at
    `on_train_begin` and steps it in `on_pre_optimizer_step`: after the backward passes of the
    `gradient_accumulation_steps` micro-batches (their gradients summed, each loss divided by the
    Trainer as for the model) and before the model's optimizer steps; then it zeroes their gradients.
    With `fp16=True` it unscales and steps through the Trainer's `GradScaler` (skipping a step
    whose gradients overflowed, as the model's).

    Hold the data parameters in the model (`self.dp = DataParameters(...)`) so that they move with
    it to its device and are saved with its weights. At `on_save` the optimizer's momentum buffers
    go into the checkpoint folder (`DATA_PARAMETERS_FILE`); call `load_checkpoint` on it
    before resuming.

    Args:
        data_parameters: the `DataParameters` to train.
        **optimizer_kwargs: passed to `data_parameters.optimizer` (its learning rates, momentum and
            weight decays).
    """

    def on_train_begin(self, args, state, control, **kwargs):
        self._make_optimizer()
        self._load_saved()  # after the Trainer moved the model: the buffers follow the parameters

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._step(getattr(optimizer, "scaler", None))  # accelerate's AcceleratedOptimizer under fp16

    def on_save(self, args, state, control, **kwargs):
        if self.optimizer is not None:
            _save_in_checkpoint(args, state, self.state_dict(), DATA_PARAMETERS_FILE)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (momentum buffers, step counts)."""
        return {} if self.optimizer is None else {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state.get("optimizer")

    def load_checkpoint(self, folder: str | Path) -> None:
        """Load the state that `on_save` wrote into a `checkpoint-*` folder."""
        self.load_state_dict(torch.load(Path(folder) / DATA_PARAMETERS_FILE, weights_only=True))
