"""Record the per-sample training signals of any training loop, for [`curriculoss.flag`][curriculoss.flag].

Training-dynamics detectors of mislabelled samples need, for every training sample and epoch, what the
model said about it while it trained on it:

- `loss`: the task loss of the sample, by default the cross-entropy `-log softmax(z)_y`;
- `confidence`: the method's own per-sample confidence (SuperLoss sigma*, an instance data
  parameter), when there is one;
- `margin`: the logit of the given label minus the largest other logit,
  `M(x, y) = z_y - max_{i != y} z_i`, whose mean over the epochs is the Area Under the Margin
  (AUM; Pleiss et al., "Identifying Mislabeled Data using the Area Under the Margin Ranking",
  NeurIPS 2020, Eqs. 1-2). A sample the model fits against its label has a negative margin.

`Recorder` collects them batch by batch (`update`), closes each epoch (`end_epoch`) and
writes the `signals.npz` file that `curriculoss train` writes and `curriculoss flag` reads:

```python
recorder = Recorder(len(train_set))
for epoch in range(epochs):
    for x, y, index in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        ...
        recorder.update(index, logits, y)
    recorder.end_epoch()
recorder.save("run/signals.npz", noise_mask=known_mask)  # then: curriculoss flag run/
```

Per batch the recorder only keeps detached device tensors, so it adds no host-device synchronisation
to the loop; `end_epoch` moves the epoch to the CPU once. Under `torch.distributed` every rank
records the samples of its own shard and `end_epoch` gathers them, so every rank holds the whole
table and rank 0 writes the file (`save` does nothing on the other ranks). Its state (the table so far)
is in `state_dict` for exact resume.

This module needs numpy and torch only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from curriculoss import distributed as dist_utils

__all__ = ["Recorder", "SIGNALS", "margins"]

#: The per-epoch signals a recorder keeps, each `(epochs, N)` in `signals.npz`.
SIGNALS = ("loss", "confidence", "margin")


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """The AUM margin `z_y - max_{i != y} z_i` of each row (Pleiss et al. 2020, Eq. 1).

    Args:
        logits: `(B, C)` with `C >= 2`.
        labels: `(B,)` integer labels (the given, possibly wrong, ones).

    Returns:
        `(B,)` float32; negative when another class has the larger logit.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2 classes, got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match logits, got {tuple(labels.shape)}")
    z = logits.detach().float()
    y = labels.long().unsqueeze(1)
    given = z.gather(1, y).squeeze(1)
    other = z.scatter(1, y, float("-inf")).amax(1)
    return given - other


class Recorder:
    """Per-sample, per-epoch loss, confidence and margin of a training run.

    Args:
        num_samples: the number of training samples; `update`'s indices are in `[0, num_samples)`.

    Attributes:
        epochs: the number of closed epochs.
    """

    def __init__(self, num_samples: int):
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self._rows: dict[str, list[Tensor]] = {name: [] for name in SIGNALS}
        self.labels = torch.full((self.num_samples,), -1, dtype=torch.int64)
        self.predicted = torch.full((self.num_samples,), -1, dtype=torch.int64)
        self._pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    @property
    def epochs(self) -> int:
        return len(self._rows["loss"])

    @torch.no_grad()
    def update(self, index, outputs: Tensor, labels: Tensor, confidence: Tensor | None = None,
               loss: Tensor | None = None) -> None:
        """Record one batch.

        Args:
            index: `(B,)` the samples' indices in the training set (a tensor, array or list).
            outputs: `(B, C)` the model's logits for a classification; for anything else (e.g. a
                regression's `(B,)` or `(B, 1)` output) no margin is recorded and `loss` is needed.
            labels: `(B,)` the labels trained on (the given ones, possibly wrong).
            confidence: `(B,)` the method's per-sample confidence, optional.
            loss: `(B,)` the per-sample loss to record; default the cross-entropy of `outputs`.
        """
        device = outputs.device
        index = torch.as_tensor(index, device=device)
        if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"index must be a 1-D integer tensor of sample indices, got dtype {index.dtype} "
                             f"and shape {tuple(index.shape)}")
        b = index.shape[0]
        if device.type == "cpu" and b:  # host memory: checked now, at no device synchronisation
            lo, hi = (int(v) for v in torch.aminmax(index))
            if lo < 0 or hi >= self.num_samples:
                raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples), got values in [{lo}, {hi}]; "
                                 "nothing was recorded for this batch")
        if outputs.shape[:1] != (b,):
            raise ValueError(f"outputs must have {b} rows, one per index, got shape {tuple(outputs.shape)}")
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (b,):
            raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
        classification = outputs.dim() == 2 and outputs.shape[1] >= 2 and not labels.dtype.is_floating_point
        nan = torch.full((b,), float("nan"), device=device)
        if loss is None:
            if not classification:
                raise ValueError("loss is needed when outputs are not (B, C) logits with integer labels")
            loss = F.cross_entropy(outputs.detach().float(), labels.long(), reduction="none")
        elif loss.shape != (b,):
            raise ValueError(f"loss must have shape ({b},), got {tuple(loss.shape)}")
        if confidence is not None and confidence.shape != (b,):
            raise ValueError(f"confidence must have shape ({b},), got {tuple(confidence.shape)}")
        margin = margins(outputs, labels) if classification else nan
        values = torch.stack([loss.detach().float(), confidence.detach().float().to(device) if confidence is not None
                              else nan, margin])
        predicted = outputs.detach().argmax(1) if classification else torch.full((b,), -1, device=device)
        given = labels.long() if classification else torch.full((b,), -1, device=device, dtype=torch.int64)
        self._pending.append((index.long(), values.t(), given, predicted.long()))

    def end_epoch(self) -> None:
        """Close the epoch: gather the ranks' batches (distributed), move them to the CPU once, add a row.

        A sample not seen in the epoch gets NaN; one seen twice keeps its last batch's values.
        Under `torch.distributed` every rank must call it, also a rank that saw no batch. An index
        out of range on an accelerator (checked here, not at `update`, which would wait for the device)
        is refused naming its batch; that batch is dropped, the others are kept and the epoch stays open.
        """
        if not dist_utils.is_distributed():  # (distributed: checked after the gather, on every rank alike)
            self._drop_bad_batches()
        if self._pending:
            index, values, given, predicted = (torch.cat(parts) for parts in zip(*self._pending))
        else:
            index, values = torch.empty(0, dtype=torch.int64), torch.empty(0, len(SIGNALS))
            given, predicted = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
        self._pending = []
        if dist_utils.is_distributed():
            index, values, given, predicted = dist_utils.all_gather_cat(index, values, given, predicted)
        index, values, given, predicted = index.cpu(), values.cpu(), given.cpu(), predicted.cpu()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples); this epoch had indices "
                             f"from {int(index.min())} to {int(index.max())} on some rank")
        for k, name in enumerate(SIGNALS):
            row = torch.full((self.num_samples,), float("nan"))
            row[index] = values[:, k]
            self._rows[name].append(row)
        known = given >= 0
        self.labels[index[known]] = given[known]
        self.predicted[index] = predicted

    def _drop_bad_batches(self) -> None:
        """Refuse the pending batches whose indices are out of range (one host read for the epoch)."""
        if not self._pending:
            return
        bounds = torch.stack([torch.stack(torch.aminmax(i)) if i.numel() else torch.zeros(2, dtype=i.dtype, device=i.device)
                              for i, *_ in self._pending]).cpu()
        bad = [k for k, (lo, hi) in enumerate(bounds.tolist()) if lo < 0 or hi >= self.num_samples]
        if bad:
            lo, hi = bounds[bad[0]].tolist()
            self._pending = [batch for k, batch in enumerate(self._pending) if k not in bad]
            raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples); update call {bad[0] + 1} of "
                             f"this epoch had values in [{lo}, {hi}] ({len(bad)} such batch(es) dropped, the other "
                             f"{len(self._pending)} kept: call end_epoch() again to close the epoch)")

    def signal(self, name: str) -> Tensor:
        """The `(epochs, N)` table of `'loss'`, `'confidence'` or `'margin'` over the closed epochs.

        Raises:
            ValueError: `name` is not one of `SIGNALS`.
        """
        if name not in SIGNALS:
            raise ValueError(f"name must be one of {', '.join(SIGNALS)}; got {name!r}")
        rows = self._rows[name]
        return torch.stack(rows) if rows else torch.empty(0, self.num_samples)

    def last(self, name: str) -> Tensor:
        """The `(N,)` row of `'loss'`, `'confidence'` or `'margin'` of the last closed epoch.

        Raises:
            ValueError: `name` is not one of `SIGNALS`.
            RuntimeError: no epoch has been closed yet.
        """
        if name not in SIGNALS:
            raise ValueError(f"name must be one of {', '.join(SIGNALS)}; got {name!r}")
        if not self._rows[name]:
            raise RuntimeError("no epoch closed yet: call end_epoch() first")
        return self._rows[name][-1]

    def arrays(self, **extra) -> dict[str, np.ndarray]:
        """The contents of `signals.npz`: the three tables, `labels` (the last label each sample
        was trained with, -1 if never seen), `predicted` (the argmax of its last recorded output) and
        the `extra` arrays (e.g. `noise_mask`, `true_labels`; `labels=` replaces the recorded ones)."""
        out = {name: self.signal(name).numpy() for name in SIGNALS}
        out["labels"] = self.labels.numpy().copy()
        out["predicted"] = self.predicted.numpy().copy()
        for key, value in extra.items():
            if value is not None:
                out[key] = self._extra_array(key, value)
        return out

    def _extra_array(self, key: str, value) -> np.ndarray:
        """An extra array for `signals.npz`: numeric or bool, one entry per sample when it is per sample."""
        array = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise ValueError(f"{key} must be a numeric or bool array, got dtype {array.dtype}")
        if key in ("labels", "noise_mask", "true_labels") and array.shape != (self.num_samples,):
            raise ValueError(f"{key} must have shape ({self.num_samples},), one entry per sample, got {array.shape}")
        return array

    def save(self, path: str | Path, **extra) -> None:
        """Write `signals.npz` (atomically; rank 0 only under `torch.distributed`).

        Args:
            path: a file or a folder (created if missing; a path without a suffix is a folder).
            **extra: as in `arrays`; pass `noise_mask` when the wrong labels are known, for
                `curriculoss flag` to score its ranking.

        Raises:
            RuntimeError: an epoch is open (its batches would be lost).
        """
        if self._pending:
            raise RuntimeError(f"save() with {len(self._pending)} batch(es) of an open epoch: call end_epoch() first")
        if dist_utils.rank() != 0:
            return
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / "signals.npz"
        arrays = self.arrays(**extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:  # e.g. a full disk: no partial file left; a previous signals.npz stays
            tmp.unlink(missing_ok=True)
            raise

    def state_dict(self) -> dict[str, Tensor]:
        """The closed epochs (tensors only: loads with `torch.load(weights_only=True)`)."""
        if self._pending:
            raise RuntimeError("state_dict() in the middle of an epoch: call end_epoch() first")
        return {**{name: self.signal(name) for name in SIGNALS}, "labels": self.labels.clone(),
                "predicted": self.predicted.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in SIGNALS:
            table = torch.as_tensor(state[name])
            if table.dim() != 2 or table.shape[1] != self.num_samples:
                raise ValueError(f"state {name!r} has shape {tuple(table.shape)}; expected (epochs, {self.num_samples})")
        epochs = {state[name].shape[0] for name in SIGNALS}
        if len(epochs) != 1:
            raise ValueError(f"state tables disagree on the number of epochs: {sorted(epochs)}")
        self._rows = {name: [r.clone().float() for r in torch.as_tensor(state[name]).unbind(0)] for name in SIGNALS}
        self.labels = torch.as_tensor(state["labels"]).clone().long()
        self.predicted = torch.as_tensor(state["predicted"]).clone().long()
        self._pending = []
