"""Lightning callbacks: record the per-sample signals for `curriculoss flag`, and train data parameters.

Install with `pip install "curriculoss[lightning]"`. Both callbacks work with Lightning's automatic
optimization (`configure_optimizers` returning e.g. `AdamW(self.parameters())`) and with manual
optimization, on one device or under DDP::

    class Classifier(L.LightningModule):
        def __init__(self, num_samples):
            super().__init__()
            self.net = ...
            self.criterion = SuperLoss(num_samples=num_samples)   # or: self.dp = DataParameters(C, N)

        def training_step(self, batch, batch_idx):
            x, y, index = batch                                     # from IndexedDataset
            logits = self.net(x)
            loss = self.criterion(F.cross_entropy(logits, y, reduction="none"), index)
            return {"loss": loss, "logits": logits.detach(), "confidence": self.criterion.confidence}

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters())

    recorder = RecorderCallback(len(train_set), noise_mask=mask)   # writes signals.npz at the end
    trainer = L.Trainer(max_epochs=20, callbacks=[recorder])      # + DataParametersCallback(model.dp)
    trainer.fit(model, DataLoader(IndexedDataset(train_set), batch_size=64, shuffle=True))
    # then: curriculoss flag <trainer.log_dir>

If both `lightning` and `pytorch_lightning` are installed, the callbacks are `lightning.pytorch`
callbacks: use them with `lightning.pytorch.Trainer` (`import lightning as L`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


from curriculoss.integrations import _DataParametersStep, _Recording, _require

pl = _require(("lightning.pytorch", "pytorch_lightning"), "lightning", "curriculoss.integrations.lightning")

__all__ = ["RecorderCallback", "DataParametersCallback"]


def _field(batch: Any, key: int | str | Sequence[str] | None, position: int, names: Sequence[str], what: str):
    """`batch[key]`: by position in a tuple/list batch, by name in a dict batch (the first of
    `names` present when `key` is None)."""
    if isinstance(batch, Mapping):
        candidates = names if key is None else [key] if isinstance(key, (str, int)) else list(key)
        for name in candidates:
            if name in batch:
                return batch[name]
        raise KeyError(f"RecorderCallback: the batch has no {what} under {', '.join(map(repr, candidates))} "
                       f"(its keys: {', '.join(map(repr, batch))}); pass {what}_key=... to name it")
    if isinstance(batch, (tuple, list)):
        index = position if key is None else key
        if not isinstance(index, int):
            raise TypeError(f"RecorderCallback: {what}_key must be a position (int) for a tuple batch, got {index!r}")
        if not -len(batch) <= index < len(batch):
            raise IndexError(f"RecorderCallback: {what}_key={index} is outside the batch of {len(batch)} items")
        return batch[index]
    raise TypeError(f"RecorderCallback reads the {what} from a tuple or dict batch, got {type(batch).__name__}")


class RecorderCallback(_Recording, pl.Callback):
    """Records each training sample's loss, confidence and margin, per epoch, for `curriculoss flag`.

    After every training batch (`on_train_batch_end`) it reads the samples' indices and labels from
    the batch and the logits (and optionally the confidence) from what `training_step` returned,
    which must be a dict such as `{"loss": loss, "logits": logits.detach()}`. It closes an epoch at
    `on_train_epoch_end` and writes `signals.npz` at `on_train_end` (rank 0 under DDP, where the
    epochs gather every rank's samples). Its `state_dict` holds the recorded epochs, and the batches
    of the epoch in progress, so a Lightning checkpoint carries them and a resumed run continues them.

    Args:
        num_samples: the number of training samples; indices are in `[0, num_samples)`.
        path: where to write `signals.npz` (a file, or a folder); default `trainer.log_dir` (the
            logger's folder, else `default_root_dir`). After training, `saved_path` says where.
        noise_mask: the known wrong labels (bool, `(num_samples,)`), saved for `flag` to score its
            ranking.
        extra: more arrays to save (e.g. `{"true_labels": y}`).
        stream: write each epoch into `path/signals` as it closes (`Recorder(path=...)`), so that memory
            does not grow with the epochs; `path` is then needed, and a resumed run must use the same one.
        label_key: where the batch holds the labels: a position in a tuple batch (default 1, i.e.
            `(x, y, index)` from `IndexedDataset`) or a key in a dict batch (default `"labels"` or
            `"label"`).
        index_key: where the batch holds the indices: a position (default -1) or a key (default
            `"index"`).
        logits_key: the key of `training_step`'s dict that holds the logits.
        confidence_key: the key of the optional confidence (e.g. `criterion.confidence`,
            `dp.last_sigma`).
    """

    def __init__(self, num_samples: int, path: str | Path | None = None, *, noise_mask=None,
                 extra: Mapping[str, Any] | None = None, stream: bool = False, label_key: int | str | None = None,
                 index_key: int | str | None = None, logits_key: str = "logits",
                 confidence_key: str = "confidence"):
        _Recording.__init__(self, num_samples, path, noise_mask=noise_mask, extra=extra, stream=stream)
        self.label_key, self.index_key = label_key, index_key
        self.logits_key, self.confidence_key = logits_key, confidence_key

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(outputs, Mapping) or outputs.get(self.logits_key) is None:
            got = type(outputs).__name__ if not isinstance(outputs, Mapping) else f"a dict with keys {list(outputs)}"
            raise ValueError(f"RecorderCallback needs each batch's logits: training_step must return "
                             f"{{'loss': loss, {self.logits_key!r}: logits.detach()}} (optionally with "
                             f"{self.confidence_key!r}: the per-sample confidence); it returned {got}")
        logits = outputs[self.logits_key]
        labels = _field(batch, self.label_key, 1, ("labels", "label"), "label")
        index = _field(batch, self.index_key, -1, ("index",), "index")
        self.recorder.update(index, logits, labels, confidence=outputs.get(self.confidence_key))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.recorder.end_epoch()

    def on_train_end(self, trainer, pl_module) -> None:
        folder = trainer.log_dir or trainer.default_root_dir  # (log_dir: a collective call under DDP)
        self.saved_path = self.save(self.path if self.path is not None else folder)

    def state_dict(self) -> dict[str, Any]:
        return {"recorder": self.recorder.state_dict(open_epoch=True)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state_dict["recorder"])


class DataParametersCallback(_DataParametersStep, pl.Callback):
    """Trains `DataParameters` with their own optimizer next to the model's.

    The data parameters are not in `parameters()`, so the optimizer of `configure_optimizers`
    never sees them: this callback creates `data_parameters.optimizer(**optimizer_kwargs)` (a
    `SparseSGD`) at `setup` and steps it in `on_before_optimizer_step`, i.e.
    after the backward passes and before the model's optimizer steps, then zeroes its gradients. So
    it steps exactly when Lightning steps: once per `accumulate_grad_batches` batches, with the
    gradients summed over them. With `precision="16-mixed"` it unscales and steps through the
    trainer's `GradScaler` (skipping a step whose gradients overflowed, as the model's).

    Hold the data parameters as a submodule of the LightningModule (`self.dp = DataParameters(...)`)
    so they follow the model to its device and into its checkpoints; `state_dict` of this callback
    holds the optimizer's momentum buffers (and the data parameters themselves when they are not part
    of the module), so a Lightning checkpoint resumes them exactly.

    Args:
        data_parameters: the `DataParameters` to train.
        **optimizer_kwargs: for `optimizer` (`class_lr`,
            `instance_lr`, `momentum`, weight decays, ...).
    """

    _inside_module: bool | None = None  # whether the LightningModule holds the data parameters (at setup)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._make_optimizer()
        self._inside_module = any(m is self.data_parameters for m in pl_module.modules())

    def on_fit_start(self, trainer, pl_module) -> None:
        # A checkpoint is restored before the model moves to its device: load the momentum buffers
        # now, so that they land on the data parameters' device.
        self._load_saved()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._step(getattr(trainer.precision_plugin, "scaler", None))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self._inside_module is False:
            state["data_parameters"] = self.data_parameters.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "data_parameters" in state_dict:
            self.data_parameters.load_state_dict(state_dict["data_parameters"])
        self._loaded = state_dict.get("optimizer")
