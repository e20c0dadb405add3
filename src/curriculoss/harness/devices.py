"""Where a run trains: its device, the memory free for its data, and the process group under `torchrun`."""
from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "available_memory", "init_distributed_from_env", "end_distributed"]


def resolve_device(name: str) -> torch.device:
    """The torch device of `name` (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`); under torchrun on
    CUDA, GPU `LOCAL_RANK`. A device that is not there is an error naming it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available here (use --device cpu or auto)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r}: MPS is not available here (use --device cpu or auto)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    return dev


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes free for one process's data set: the host's available memory (`MemAvailable`, else the
    free physical pages) shared by the host's `torchrun` processes (`LOCAL_WORLD_SIZE`: each holds
    its own copy), and on CUDA at most the device's free memory; `None` when unknown."""
    free = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            free = None
    if free is not None:
        free //= max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.mem_get_info(device)[0]
        free = gpu if free is None else min(free, gpu)
    return free


def init_distributed_from_env(device: torch.device) -> bool:
    """Under torchrun (`WORLD_SIZE` > 1) start the default process group (NCCL on CUDA, each rank on GPU
    `LOCAL_RANK`; gloo otherwise); True if this call started it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl" if dist.is_nccl_available() else "gloo")
    else:
        dist.init_process_group("gloo")
    return True


def end_distributed(finished: bool) -> None:
    """Tear down the process group that `train` started, in the order that stopped ranks aborting.

    A rank that tore down and exited while another was still running (rank 0 writing the run folder)
    was seen to abort in interpreter shutdown ("terminate called without an active exception", gloo,
    torch 2.13): 8 of 60 runs of a minimal DDP script on a loaded 2-core machine, none of 100 with a
    barrier before the teardown, a collection of the DDP wrapper, or both (docs/distributed-gpu.md). So the training objects are collected first and, after a run that finished on this
    rank, the ranks wait for each other. After an error there is no barrier: a rank that failed alone
    would leave the others waiting for it (under torchrun its agent ends them).
    """
    import gc

    import torch.distributed as dist

    gc.collect()  # the DDP wrapper and its reducer, if a reference cycle kept them, while the group is alive
    if finished:
        dist.barrier()
    dist.destroy_process_group()
