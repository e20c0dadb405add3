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
writes the signals that `curriculoss train` writes and `curriculoss flag` reads:

```python
recorder = Recorder(len(train_set), path="run/signals")  # or Recorder(N): in memory, then signals.npz
for epoch in range(epochs):
    for x, y, index in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        ...
        recorder.update(index, logits, y)
    recorder.end_epoch()
recorder.save(noise_mask=known_mask)  # then: curriculoss flag run/
```

Per batch the recorder writes the batch into the epoch's buffers on the outputs' device (one
`index_copy_` per buffer), so it adds no host-device synchronisation to the loop; `end_epoch` moves
the epoch to the CPU once. Its memory is that of one epoch, `O(N)`:

- in memory (`Recorder(n)`), the closed epochs are kept as rows, `O(epochs x N)`, and `save`
  writes them to `signals.npz`;
- streamed (`Recorder(n, path="run/signals")`), each closed epoch is appended to the files of a
  signals folder (`curriculoss.signals`) and dropped from memory: the recorder holds
  `O(N)` whatever the number of epochs, and `save` adds the labels and the extras to the folder.
  `float16` storage (`dtype=`) halves the files.

Under `torch.distributed` every rank records the samples of its own shard into its epoch buffers;
`end_epoch` sums them over the ranks (a sample seen by two ranks in one epoch, e.g. a sampler's
padding, gets the mean of its two records), and rank 0, the writer, keeps the table (in memory or on
disk) and writes the file; the other ranks keep the last epoch only. Its state (the closed epochs, or
for a streamed recorder their count) is in `state_dict` for exact resume.

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
from curriculoss.signals import SIGNALS, STORAGE_DTYPES, Table, TableWriter, write_array

__all__ = ["Recorder", "SIGNALS", "margins"]


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
        path: a folder to stream the closed epochs to (`path/loss.npy`, ...; see
            `curriculoss.signals`), so that memory does not grow with the epochs; `None` (default)
            keeps them in memory. A folder that already holds epochs is continued only after
            `load_state_dict` (a resume), never overwritten.
        dtype: the storage of the tables, `"float32"` (default) or `"float16"` (half the memory or disk;
            values to about 3 significant digits).

    Attributes:
        epochs: the number of closed epochs.
        labels: `(N,)` int64, the last label each sample was trained with (-1: never seen).
        predicted: `(N,)` int64, the argmax of each sample's last recorded output (-1: none).
    """

    def __init__(self, num_samples: int, *, path: str | os.PathLike | None = None, dtype: str = "float32"):
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if str(dtype) not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}; got {dtype!r}")
        self.num_samples, self.dtype = int(num_samples), str(dtype)
        self.path = None if path is None else Path(path)
        self._writers = None if path is None else {
            name: TableWriter(self.path / f"{name}.npy", self.num_samples, self.dtype) for name in SIGNALS}
        self._rows: dict[str, list[Tensor]] = {name: [] for name in SIGNALS}
        self._epochs = 0
        self._last: Tensor | None = None
        self.labels = torch.full((self.num_samples,), -1, dtype=torch.int64)
        self.predicted = torch.full((self.num_samples,), -1, dtype=torch.int64)
        self._open: dict[str, Tensor] | None = None  # the epoch in progress (see _buffers)
        self._bounds: list[Tensor] = []  # per update call: its smallest and largest index

    @property
    def epochs(self) -> int:
        return self._epochs

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
        index = self._checked_index(index, device)
        b = index.shape[0]
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
        conf = confidence.detach().float().to(device) if confidence is not None else nan
        values = torch.stack([loss.detach().float(), conf, margin, torch.ones_like(nan)])
        minus_one = torch.full((b,), -1, device=device, dtype=torch.int64)
        given = labels.long() if classification else minus_one
        predicted = outputs.detach().argmax(1) if classification else minus_one
        self._record(index.long(), values, given, predicted.long())

    def _checked_index(self, index, device: torch.device) -> Tensor:
        """`index` as a tensor on `device`; its range is checked now on the CPU (no device wait),
        at `end_epoch` elsewhere."""
        index = torch.as_tensor(index, device=device)
        if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"index must be a 1-D integer tensor of sample indices, got dtype {index.dtype} "
                             f"and shape {tuple(index.shape)}")
        if self._checks_at_update(device) and index.numel():
            lo, hi = (int(v) for v in torch.aminmax(index))
            if lo < 0 or hi >= self.num_samples:
                raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples), got values in [{lo}, {hi}]; "
                                 "nothing was recorded for this batch")
        return index

    @staticmethod
    def _checks_at_update(device: torch.device) -> bool:
        """Whether indices on `device` are checked at `update` (host memory: reading them costs no wait)."""
        return device.type == "cpu"

    def _buffers(self, device: torch.device) -> dict[str, Tensor]:
        """The epoch in progress on `device`: `values` `(4, N + 1)` (loss, confidence, margin, seen),
        `labels` and `predicted` `(N + 1,)`; column `N` takes the batches refused at `end_epoch`."""
        if self._open is None:
            if self._writers is not None and self._epochs == 0 and self._keeps_table():
                held = max(w.rows for w in self._writers.values())
                if held:
                    raise ValueError(f"path {self.path} holds {held} epoch(s) of signals already: resume them with "
                                     "load_state_dict(), or record to another path")
            n = self.num_samples + 1
            self._open = {"values": torch.zeros(len(SIGNALS) + 1, n, device=device),
                          "labels": torch.full((n,), -1, dtype=torch.int64, device=device),
                          "predicted": torch.full((n,), -1, dtype=torch.int64, device=device)}
        elif self._open["values"].device != device:
            self._open = {key: value.to(device) for key, value in self._open.items()}
        return self._open

    def _record(self, index: Tensor, values: Tensor, given: Tensor, predicted: Tensor) -> None:
        buffers = self._buffers(index.device)
        if not index.numel():
            self._bounds.append(torch.zeros(2, dtype=torch.int64, device=index.device))
            return
        bounds = torch.stack(torch.aminmax(index))
        self._bounds.append(bounds)
        if self._checks_at_update(index.device):
            target = index  # checked at the call
        else:  # a batch out of range writes into the spare column only, and is refused at end_epoch
            inside = (bounds[0] >= 0) & (bounds[1] < self.num_samples)
            target = torch.where(inside, index, self.num_samples)
        buffers["values"].index_copy_(1, target, values)
        buffers["labels"].index_copy_(0, target, given)
        buffers["predicted"].index_copy_(0, target, predicted)

    def end_epoch(self) -> None:
        """Close the epoch: sum the ranks' records (distributed), move them to the CPU once, add a row.

        A sample not seen in the epoch gets NaN; one seen twice keeps its last batch's values.
        Under `torch.distributed` every rank must call it, also a rank that saw no batch. An index
        out of range on an accelerator (checked here, not at `update`, which would wait for the device)
        is refused naming its batch; that batch is dropped, the others are kept and the epoch stays open.
        """
        self._refuse_bad_batches()
        buffers = self._open or self._buffers(torch.device("cpu"))
        self._open, self._bounds = None, []
        n = self.num_samples
        values, given, predicted = buffers["values"][:, :n], buffers["labels"][:n], buffers["predicted"][:n]
        if dist_utils.is_distributed():
            values = dist_utils.all_reduce_sum(values.contiguous())
            given = dist_utils.all_reduce_max(given.contiguous())
            predicted = dist_utils.all_reduce_max(predicted.contiguous())
        values, given, predicted = values.cpu(), given.cpu(), predicted.cpu()
        seen = values[-1] > 0
        row = values[:-1].div_(values[-1].clamp_min(1)).masked_fill_(~seen, float("nan"))  # in place: no copy of N
        self.labels = torch.where(given >= 0, given, self.labels)
        self.predicted = torch.where(seen, predicted, self.predicted)
        self._append(row)

    def _refuse_bad_batches(self) -> None:
        """Refuse the update calls whose indices are out of range (one host read for the epoch); under
        `torch.distributed` every rank learns whether any rank had one."""
        bad: list[int] = []
        if self._bounds and not self._checks_at_update(self._bounds[0].device):
            bounds = torch.stack(self._bounds).cpu()
            bad = [k for k, (lo, hi) in enumerate(bounds.tolist()) if lo < 0 or hi >= self.num_samples]
        anywhere = len(bad)
        if dist_utils.is_distributed():
            anywhere = int(dist_utils.all_reduce_sum(torch.tensor([len(bad)], dtype=torch.int64)))
        if bad:
            lo, hi = bounds[bad[0]].tolist()
            self._bounds = [b for k, b in enumerate(self._bounds) if k not in bad]
            raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples); update call {bad[0] + 1} of "
                             f"this epoch had values in [{lo}, {hi}] ({len(bad)} such batch(es) dropped, the other "
                             f"{len(self._bounds)} kept: call end_epoch() again to close the epoch)")
        if anywhere:
            raise ValueError(f"index must be in [0, {self.num_samples}) (num_samples); another rank's update calls "
                             "had indices out of range (dropped there): call end_epoch() again to close the epoch")

    def _keeps_table(self) -> bool:
        """Whether this process keeps the closed epochs (rank 0, the writer, under `torch.distributed`)."""
        return dist_utils.rank() == 0

    def _append(self, row: Tensor) -> None:
        """Add a closed epoch `(3, N)`: to the files, to memory, or (a rank that is not the writer) nowhere."""
        self._last = row
        if self._keeps_table():
            stored = row.to(getattr(torch, self.dtype))
            for name, values in zip(SIGNALS, stored):
                if self._writers is not None:
                    self._writers[name].append(values.numpy())
                else:
                    self._rows[name].append(values.clone())  # its own memory, not a view of the epoch's buffer
        self._epochs += 1

    def signal(self, name: str) -> Tensor:
        """The `(epochs, N)` table of `'loss'`, `'confidence'` or `'margin'` over the closed epochs
        (read from the files for a streamed recorder).

        Raises:
            ValueError: `name` is not one of `SIGNALS`.
            RuntimeError: under `torch.distributed`, on a rank other than 0 (which keeps the last epoch only).
        """
        self._check_name(name)
        if not self._keeps_table():
            raise RuntimeError(f"rank {dist_utils.rank()} keeps the last epoch only (last()); rank 0 holds the table")
        if self._writers is not None:
            writer = self._writers[name]
            if not writer.rows:
                return torch.empty(0, self.num_samples, dtype=getattr(torch, self.dtype))
            return torch.from_numpy(np.asarray(Table(writer.path)))
        rows = self._rows[name]
        return torch.stack(rows) if rows else torch.empty(0, self.num_samples, dtype=getattr(torch, self.dtype))

    def last(self, name: str) -> Tensor:
        """The `(N,)` float32 row of `'loss'`, `'confidence'` or `'margin'` of the last closed epoch.

        Raises:
            ValueError: `name` is not one of `SIGNALS`.
            RuntimeError: no epoch has been closed yet.
        """
        self._check_name(name)
        if self._last is None:
            raise RuntimeError("no epoch closed yet: call end_epoch() first")
        return self._last[SIGNALS.index(name)]

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in SIGNALS:
            raise ValueError(f"name must be one of {', '.join(SIGNALS)}; got {name!r}")

    def arrays(self, **extra) -> dict[str, np.ndarray]:
        """The contents of `signals.npz`: the three tables, `labels` (the last label each sample
        was trained with, -1 if never seen), `predicted` (the argmax of its last recorded output) and
        the `extra` arrays (e.g. `noise_mask`, `true_labels`; `labels=` replaces the recorded ones)."""
        out = {name: self.signal(name).numpy() for name in SIGNALS}
        out.update(self._per_sample(extra))
        return out

    def _per_sample(self, extra: dict) -> dict[str, np.ndarray]:
        out = {"labels": self.labels.numpy().copy(), "predicted": self.predicted.numpy().copy()}
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

    def save(self, path: str | Path | None = None, **extra) -> None:
        """Write the signals (atomically; rank 0 only under `torch.distributed`).

        In memory: `signals.npz` at `path`. Streamed: `labels.npy`, `predicted.npy` and one `.npy` per
        extra into the recorder's own folder, which holds the tables already (`path` is then omitted).

        Args:
            path: a file or a folder (created if missing; a path without a suffix is a folder, which
                gets `signals.npz`).
            **extra: as in `arrays`; pass `noise_mask` when the wrong labels are known, for
                `curriculoss flag` to score its ranking.

        Raises:
            RuntimeError: an epoch is open (its batches would be lost).
            ValueError: a streamed recorder given another `path`, or an extra of the wrong shape.
        """
        if self._bounds:
            raise RuntimeError(f"save() with {len(self._bounds)} batch(es) of an open epoch: call end_epoch() first")
        if self._writers is not None and path is not None and Path(path) != self.path:
            raise ValueError(f"path: this recorder streams to {self.path}; save() writes there (give no path)")
        if self._writers is None and path is None:
            raise ValueError("path is needed: this recorder keeps its signals in memory (give a file or a folder)")
        if not self._keeps_table():
            return
        if self._writers is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            for key, array in self._per_sample(extra).items():
                write_array(self.path, key, array)
            return
        self._save_npz(Path(path), self.arrays(**extra))

    @staticmethod
    def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
        if path.is_dir() or not path.suffix:
            path = path / "signals.npz"
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

    def state_dict(self, *, open_epoch: bool = False) -> dict[str, Tensor]:
        """The closed epochs (tensors only: loads with `torch.load(weights_only=True)`).

        In memory, the tables; streamed (or on a rank other than 0), their number `epochs` (the
        tables stay in the folder). With `open_epoch=True` also the epoch in progress, so that a
        checkpoint may be taken at any step.

        Raises:
            RuntimeError: an epoch is open and `open_epoch` is false.
        """
        if self._bounds and not open_epoch:
            raise RuntimeError("state_dict() in the middle of an epoch: call end_epoch() first")
        state = {"epochs": torch.tensor(self._epochs), "labels": self.labels.clone(), "predicted": self.predicted.clone()}
        if self._writers is None and self._keeps_table():
            state.update({name: self.signal(name) for name in SIGNALS})
        if self._bounds:
            state.update({f"open_{key}": value.cpu() for key, value in self._open.items()})
            state["open_bounds"] = torch.stack(self._bounds).cpu()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore `state_dict` (also one of an in-memory recorder into a streamed one, whose files
        are then written; a streamed one's files are cut back to its `epochs`)."""
        epochs = self._state_epochs(state)
        for key in ("labels", "predicted"):
            if torch.as_tensor(state[key]).shape != (self.num_samples,):
                raise ValueError(f"state {key!r} has shape {tuple(state[key].shape)}; expected ({self.num_samples},)")
        tables = {name: torch.as_tensor(state[name]) for name in SIGNALS if name in state}
        if not tables and self._writers is None and self._keeps_table() and epochs:
            raise ValueError("state holds no tables (they are in the signals folder of a streamed recorder): create "
                             "the recorder with path= that folder")
        if self._keeps_table():
            self._restore_tables(tables, epochs)
        self._epochs = epochs
        self._last = torch.stack([tables[name][-1].float() for name in SIGNALS]) if tables and epochs else None
        if self._last is None and self._writers is not None and epochs and self._keeps_table():
            self._last = torch.stack([torch.from_numpy(Table(self._writers[name].path)[-1]).float() for name in SIGNALS])
        self.labels = torch.as_tensor(state["labels"]).clone().long()
        self.predicted = torch.as_tensor(state["predicted"]).clone().long()
        self._restore_open(state)

    def _restore_open(self, state: dict[str, Tensor]) -> None:
        """The epoch in progress of `state_dict(open_epoch=True)` (or, as version 0.2.0's callbacks saved
        it, its batches `pending_*`), kept on the CPU until the next `update` names the device."""
        self._open, self._bounds = None, []
        if "open_bounds" in state:
            self._open = {key: torch.as_tensor(state[f"open_{key}"]).clone() for key in ("values", "labels", "predicted")}
            self._bounds = list(torch.as_tensor(state["open_bounds"]).unbind(0))
        elif "pending_index" in state and torch.as_tensor(state["pending_index"]).numel():
            index = self._checked_index(torch.as_tensor(state["pending_index"]).long(), torch.device("cpu"))
            values = torch.as_tensor(state["pending_values"]).float()
            values = torch.cat([values, torch.ones(len(values), 1)], 1).t()
            self._record(index, values, torch.as_tensor(state["pending_labels"]).long(),
                         torch.as_tensor(state["pending_predicted"]).long())

    def _state_epochs(self, state: dict[str, Tensor]) -> int:
        shapes = {}
        for name in (name for name in SIGNALS if name in state):
            table = torch.as_tensor(state[name])
            if table.dim() != 2 or table.shape[1] != self.num_samples:
                raise ValueError(f"state {name!r} has shape {tuple(table.shape)}; expected (epochs, {self.num_samples})")
            shapes[name] = table.shape[0]
        if shapes and len(shapes) != len(SIGNALS) or len(set(shapes.values())) > 1:
            raise ValueError(f"state tables disagree on the number of epochs: {shapes}")
        if shapes:
            return next(iter(shapes.values()))
        if "epochs" not in state:
            raise ValueError(f"state holds neither the tables ({', '.join(SIGNALS)}) nor their number of epochs")
        return int(state["epochs"])

    def _restore_tables(self, tables: dict[str, Tensor], epochs: int) -> None:
        if self._writers is None:
            self._rows = {name: [r.clone().to(getattr(torch, self.dtype)) for r in tables[name].unbind(0)]
                          for name in SIGNALS}
            return
        for name, writer in self._writers.items():
            if tables:  # an in-memory recorder's state: its tables become the files
                writer.truncate(0)
                for row in tables[name]:
                    writer.append(row.float().numpy())
            else:
                writer.truncate(epochs)
