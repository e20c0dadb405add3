"""One epoch of a run: its batches, the training step, and the epoch's numbers (`train_one_epoch`, then
`evaluate_epoch`).

`Run` holds the parts of one run that `curriculoss.harness.train` sets up. Each epoch's sample order
comes from a generator seeded with `(seed, epoch)` and its augmentation from one seeded with
`(seed, epoch, rank)`, so a resumed epoch replays the interrupted one exactly. Under `torchrun` each
global batch is cut into this rank's slice and the loss is scaled so that the gradient average over
the ranks is the global batch mean. The running sums stay tensors on the device: the host waits for
it once per epoch.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from curriculoss import distributed as dist_utils
from curriculoss.harness.augment import augment as augment_batch
from curriculoss.harness.config import TrainConfig
from curriculoss.harness.divergence import chance_accuracy, window_accuracies
from curriculoss.harness.methods import Method, accumulator_dtype
from curriculoss.recorder import Recorder

__all__ = ["Run", "EpochSums", "train_one_epoch", "evaluate_epoch", "evaluate", "stream_loader"]


@dataclass(eq=False)
class Run:
    """The parts of one training run, as `curriculoss.harness.train` sets them up.

    The training inputs are `x_train` (a tensor on the device) or, for a streamed set, `loader` (a
    `DataLoader` decoding the index batches each epoch sets); `x_test` is a tensor or such a loader.
    `net` is the model as trained (wrapped in DDP and `torch.compile` where asked), `model` the bare one.
    `holdout`: the held-out samples scored each epoch (`curriculoss.harness.holdout`), or `None`.
    """

    cfg: TrainConfig
    dev: torch.device
    data: Any  # curriculoss.harness.data.Dataset
    noisy: Any  # curriculoss.noise.NoisyLabels
    aug: str
    fill: torch.Tensor | None
    x_train: torch.Tensor | None
    loader: Any
    x_test: Any
    y_train: torch.Tensor
    y_clean: torch.Tensor
    y_test: torch.Tensor
    model: torch.nn.Module
    net: torch.nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: Any
    method_optimizer: torch.optim.Optimizer | None
    scaler: Any
    autocast: Callable[[], Any]
    recorder: Recorder
    holdout: Any = None  # curriculoss.harness.holdout.Holdout, on the device
    n: int = field(init=False)
    regression: bool = field(init=False)
    chance: float | None = field(init=False)
    world: int = field(init=False)
    rank: int = field(init=False)
    distributed: bool = field(init=False)
    writer: bool = field(init=False)

    def __post_init__(self):
        self.n = len(self.data.y_train)
        self.regression = self.cfg.task == "regression"
        self.chance = None if self.regression else chance_accuracy(self.noisy.labels, self.data.num_classes)
        self.world, self.rank = dist_utils.world_size(), dist_utils.rank()
        self.distributed = dist_utils.is_distributed()
        self.writer = self.rank == 0  # only rank 0 writes the run folder


@dataclass(eq=False)
class EpochSums:
    """The running sums of an epoch, tensors on the device (one host synchronisation per epoch)."""

    dev: torch.device
    lr: float
    started: float = field(default_factory=time.perf_counter)
    last_batch: torch.Tensor | None = None  # the last global batch's sample indices
    window_correct: list = field(default_factory=list)  # per batch, for the divergence check
    window_sizes: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.loss, self.correct_noisy, self.correct_true = (torch.zeros((), device=self.dev) for _ in range(3))

    def add(self, run: Run, out: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, global_idx: torch.Tensor) -> None:
        """Record a batch's per-sample signals and add its loss and correct predictions."""
        with torch.no_grad():
            run.recorder.update(idx, out, yb, confidence=run.method.confidence, loss=run.method.per_sample_loss)
            self.loss += run.method.per_sample_loss.sum()
            pred = out.squeeze(-1).round() if run.regression else out.argmax(1)
            batch_correct = (pred == yb).sum()
            self.correct_noisy += batch_correct
            self.window_correct.append(batch_correct)
            self.window_sizes.append(len(global_idx))
            self.correct_true += (pred == run.y_clean[idx]).sum()
        self.last_batch = global_idx


def train_one_epoch(run: Run, epoch: int, bar) -> EpochSums:
    """Train `run` for epoch `epoch` (0-based), one step per batch; the epoch's sums, over every rank."""
    sums = EpochSums(run.dev, run.optimizer.param_groups[0]["lr"])
    run.method.start_epoch()
    for idx, global_idx, xb, yb in _batches(run, epoch):
        out = _step(run, xb, yb, idx, global_idx)
        sums.add(run, out, yb, idx, global_idx)
        bar.update(1)
    run.scheduler.step()
    run.recorder.end_epoch()  # distributed: gathers every rank's shard
    if run.distributed:
        _gather(run, sums)
    return sums


def _batches(run: Run, epoch: int):
    """This epoch's batches: (this rank's sample indices, the global batch's, inputs, noisy targets)."""
    cfg = run.cfg
    order_host = torch.randperm(run.n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    order = order_host.to(run.dev)
    streamed = None
    if run.loader is not None:  # this rank's index batches, as the loop below cuts them
        run.loader.batch_sampler.batches = [
            (dist_utils.shard(b, run.rank, run.world) if run.distributed else b).tolist()
            for b in order_host.split(cfg.batch_size)]
        streamed = iter(run.loader)
    aug_gen = None
    if run.aug != "none":
        aug_gen = torch.Generator(device=run.dev).manual_seed(((cfg.seed * 100_003 + epoch) * 1009 + run.rank) * 2 + 1)
    for start in range(0, run.n, cfg.batch_size):
        idx = global_idx = order[start:start + cfg.batch_size]
        if run.distributed:
            idx = dist_utils.shard(global_idx, run.rank, run.world)
        xb = next(streamed).to(run.dev, non_blocking=True) if streamed is not None else run.x_train[idx]
        yb = run.y_train[idx]
        if aug_gen is not None:
            xb = augment_batch(run.aug, xb, aug_gen, fill=run.fill)
        yield idx, global_idx, xb, yb


def _step(run: Run, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, global_idx: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a batch; the model's output (float32)."""
    with run.autocast():
        out = run.net(xb)
    # The method sees float32 outputs: its state (SuperLoss's float64 buffers, the data
    # parameters) and its loss keep their dtype whatever autocast computed the network in.
    out = out.float()
    loss = run.method(out, yb, idx)
    if run.distributed:
        # Rank r's mean times K n_r / n: DDP's (and SparseSGD's) average is the global batch mean.
        loss = loss * (run.world * len(idx) / len(global_idx)) if len(idx) else out.sum() * 0.0
    optimizers = [o for o in (run.optimizer, run.method_optimizer) if o is not None]
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        for optimizer in optimizers:
            run.scaler.step(optimizer)
        run.scaler.update()
    else:
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
    return out


def _gather(run: Run, sums: EpochSums) -> None:
    """The epoch's sums over every rank, and the method's last-batch signals of the global batch."""
    total = dist_utils.all_reduce_sum(torch.stack([sums.loss.double(), sums.correct_noisy.double(),
                                                   sums.correct_true.double()]))
    sums.loss, sums.correct_noisy, sums.correct_true = total.unbind()
    # summary() reads the last batch's signals: give it the global batch's, as one process has them.
    run.method.per_sample_loss = run.recorder.last("loss").to(run.dev)[sums.last_batch]
    if run.method.confidence is not None:
        run.method.confidence = run.recorder.last("confidence").to(run.dev)[sums.last_batch]


def evaluate_epoch(run: Run, epoch: int, sums: EpochSums) -> dict[str, float]:
    """The epoch's row of `metrics.csv`: its training figures and the test metric of the model now (and,
    with a hold-out split, its metric there against the noisy labels, `holdout_metric`)."""
    test_sum = evaluate(run.model, run.x_test, run.y_test, run.regression, autocast=run.autocast)
    parts = [sums.loss.double(), sums.correct_noisy.double(), sums.correct_true.double(), test_sum]
    if run.holdout is not None:
        parts.append(evaluate(run.model, run.holdout.x, run.holdout.y, run.regression, autocast=run.autocast))
    # The epoch's one wait for the device: all its numbers in one transfer.
    totals = torch.stack(parts).tolist()
    stat = run.method.summary()
    n = run.n
    row = {
        "epoch": epoch + 1, "lr": sums.lr, "train_loss": totals[0] / n, "train_acc_noisy": totals[1] / n,
        "train_acc_true": totals[2] / n, "test_metric": totals[3] / max(len(run.data.y_test), 1),
        "method_stat": float("nan") if stat is None else stat, "seconds": time.perf_counter() - sums.started,
        **_window_columns(sums.window_correct, sums.window_sizes, run.distributed),
        **_epoch_columns(run.method, run.distributed),
    }
    if run.holdout is not None:
        row["holdout_metric"] = totals[4] / len(run.holdout)
    return row


def evaluate(model, x, y: torch.Tensor, regression: bool, batch_size: int = 1024,
             autocast=nullcontext) -> torch.Tensor:
    """The test set's summed correct predictions (classification) or absolute errors (regression), as a
    float64 tensor on the device: the caller reads it with the epoch's other sums, in one synchronisation.
    `x`: a tensor on the device, or a streamed set's `DataLoader` yielding the same `batch_size` batches."""
    model.eval()
    total = torch.zeros((), dtype=accumulator_dtype(y.device), device=y.device)
    streamed = iter(x) if not torch.is_tensor(x) else None
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = next(streamed).to(y.device, non_blocking=True) if streamed is not None else x[i:i + batch_size]
            with autocast():
                out = model(xb)
            out = out.float()
            if regression:
                total += (out.squeeze(-1) - y[i:i + batch_size]).abs().sum()
            else:
                total += (out.argmax(1) == y[i:i + batch_size]).sum()
    model.train()
    return total


def _window_columns(correct: list, sizes: list[int], distributed: bool) -> dict[str, float]:
    """Best quarter-epoch training accuracy (noisy labels), for the divergence check."""
    if correct:  # one host transfer per epoch
        stacked = torch.stack(correct).double()
        correct = (dist_utils.all_reduce_sum(stacked) if distributed else stacked).tolist()
    return {"train_acc_peak": window_accuracies(correct, sizes)[0]}


def _epoch_columns(method, distributed: bool) -> dict[str, float]:
    """The method's extra metrics of the epoch (e.g. SuperLoss's share at the cap), over every rank."""
    sums = method.epoch_sums()
    if distributed and sums is not None:
        sums = dist_utils.all_reduce_sum(sums)
    return method.epoch_columns(sums)


class _Stack:
    """A `DataLoader` collate: the decoded samples stacked, an empty batch (a rank's empty shard) too."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __call__(self, samples):
        return torch.stack(samples) if samples else torch.empty((0, *self.shape))


class _Batches:
    """The batch sampler of a streamed set: the index batches the loop sets for each epoch."""

    def __init__(self, batches=()):
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def stream_loader(files, workers: int, device: torch.device, batches=()):
    """A `DataLoader` decoding `files` by the index batches of a `_Batches` (set per epoch)."""
    from torch.utils.data import DataLoader

    # Its own generator: a DataLoader draws its workers' base seed from the global RNG otherwise, and
    # the streamed run must leave that RNG exactly as the in-memory run does.
    return DataLoader(files, batch_sampler=_Batches(batches), num_workers=workers, collate_fn=_Stack(files.shape[1:]),
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator())
