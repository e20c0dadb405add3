"""Small helpers for `torch.distributed`, used by the stateful modules to stay identical on every rank.

Every helper is a no-op (no collective call, no host synchronisation) unless `is_distributed`
is true: `torch.distributed` is available, a default process group is initialised and its world
size is above 1. The check is made in Python on the process-group state, never on tensor values, so
the single-process path of the callers is unchanged (and stays sync-free and compile-friendly).

What is exchanged, and when:

- `all_reduce_sum`, `all_reduce_max`: one `all_reduce` (sum, maximum) of a tensor, in place.
- `all_gather_cat`: the concatenation, in rank order, of each rank's tensors (whose first
  dimensions may differ from rank to rank): one `all_gather` of the sizes (one int64 per rank),
  then one `all_gather` per tensor of the rows padded to the largest size, trimmed afterwards.
  Its cost is O(world size x largest local size), i.e. O(global batch) for mini-batch data.

Under the `gloo` backend, CUDA tensors are moved to the CPU for the exchange (under `nccl`, CPU
tensors to the current CUDA device) and the results back to the tensors' device.
`stats` counts the bytes each rank sends (the sizes of the tensors given to the collectives),
for benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "world_size", "rank", "all_reduce_sum", "all_reduce_max", "all_gather_cat", "shard", "GlobalBatchSampler",
           "CommStats", "stats"]


@dataclass
class CommStats:
    """Bytes this rank handed to collectives (tensor sizes, padding included) and number of calls."""

    bytes_sent: int = 0
    calls: int = 0

    def reset(self) -> None:
        self.bytes_sent = 0
        self.calls = 0

    def _add(self, t: Tensor) -> None:
        self.bytes_sent += t.numel() * t.element_size()
        self.calls += 1


#: Communication counters of this process (see `CommStats`).
stats = CommStats()


def is_distributed() -> bool:
    """True when a default process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes of the default group (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _comm_device(t: Tensor) -> torch.device:
    backend = dist.get_backend()
    if t.device.type != "cpu" and backend == "gloo":
        return torch.device("cpu")
    if t.device.type == "cpu" and backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` over the ranks, in place, and return it; returns it untouched when not distributed."""
    return _all_reduce(tensor, "SUM")


def all_reduce_max(tensor: Tensor) -> Tensor:
    """The element-wise maximum of `tensor` over the ranks, in place; untouched when not distributed."""
    return _all_reduce(tensor, "MAX")


def _all_reduce(tensor: Tensor, op: str) -> Tensor:
    if not is_distributed():
        return tensor
    dev = _comm_device(tensor)
    buf = tensor if dev == tensor.device else tensor.to(dev)
    stats._add(buf)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, op))
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def all_gather_cat(*tensors: Tensor) -> tuple[Tensor, ...] | Tensor:
    """Concatenate, along dim 0 and in rank order, each rank's `tensors`.

    The tensors given by one rank share their first dimension, which may differ between ranks (the
    sizes are exchanged first). Not distributed: the tensors are returned as they are. Returns one
    tensor when given one, a tuple otherwise.
    """
    if not tensors:
        raise ValueError("all_gather_cat needs at least one tensor")
    n = tensors[0].shape[0]
    for t in tensors[1:]:
        if t.shape[0] != n:
            raise ValueError(f"all_gather_cat: tensors must share their first dimension, got {n} and {t.shape[0]}")
    if not is_distributed():
        return tensors[0] if len(tensors) == 1 else tuple(tensors)
    ws = dist.get_world_size()
    dev = _comm_device(tensors[0])
    size = torch.tensor([n], dtype=torch.int64, device=dev)
    sizes = [torch.empty_like(size) for _ in range(ws)]
    stats._add(size)
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    largest = max(counts)
    out = []
    for t in tensors:
        src = t.detach().to(dev)
        if src.dtype == torch.bool:  # not every backend gathers bool
            src = src.to(torch.uint8)
        if n < largest:
            pad = src.new_zeros((largest - n, *src.shape[1:]))
            src = torch.cat([src, pad])
        src = src.contiguous()
        parts = [torch.empty_like(src) for _ in range(ws)]
        stats._add(src)
        dist.all_gather(parts, src)
        cat = torch.cat([p[:c] for p, c in zip(parts, counts)])
        if t.dtype == torch.bool:
            cat = cat.to(torch.bool)
        out.append(cat.to(t.device))
    return out[0] if len(out) == 1 else tuple(out)


def shard(batch: Tensor, rank_: int | None = None, world: int | None = None) -> Tensor:
    """This rank's contiguous slice of a global batch (sizes differ by at most one; may be empty).

    Concatenating the slices in rank order gives the global batch back, which is the order in which
    `all_gather_cat`, `SuperLoss` and `SparseSGD`
    combine the ranks' entries: the single-process order.
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    return batch.tensor_split(world)[rank_] if world > 1 else batch


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batch sampler giving every rank its slice of the single-process batches.

    Epoch `e`'s order is `torch.randperm(num_samples)` drawn from a generator seeded with
    `seed * 100_003 + e` (the order of `curriculoss.harness.train`), cut into global batches of
    `batch_size`; each rank yields the `shard` of every global batch, so the ranks together
    see exactly the batches one process sees (`torch.utils.data.DistributedSampler` instead deals
    the samples round-robin and pads, which changes the batches). Call `set_epoch` every epoch.
    Use as `DataLoader(dataset, batch_sampler=GlobalBatchSampler(len(dataset), 128, seed=0))`;
    `drop_last` is off, so a rank's last batch may be smaller, or empty when the last global batch
    has fewer samples than there are ranks.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = globals()["rank"]() if rank is None else int(rank)
        self.world_size = globals()["world_size"]() if world_size is None else int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def global_batches(self):
        order = self.global_order()
        for start in range(0, self.num_samples, self.batch_size):
            yield order[start:start + self.batch_size]

    def __iter__(self):
        for batch in self.global_batches():
            yield shard(batch, self.rank, self.world_size).tolist()

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)
