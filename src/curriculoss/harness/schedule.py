"""The learning-rate schedule of a run: `cosine` or `step`, after `warmup` epochs of linear warmup."""
from __future__ import annotations

import math

import torch

from curriculoss.harness.config import TrainConfig

__all__ = ["lr_factor", "make_scheduler", "reschedule"]


def lr_factor(cfg: TrainConfig):
    """The learning-rate factor of epoch `e` (0-based) for the warmup and the schedule."""
    def factor(e: int) -> float:
        if e < cfg.warmup:
            return (e + 1) / (cfg.warmup + 1)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(1 for m in cfg.milestones if e >= m)
        span = cfg.epochs - cfg.warmup
        return 0.5 * (1.0 + math.cos(math.pi * (e - cfg.warmup) / span)) if span > 0 else 1.0
    return factor


def make_scheduler(optimizer, cfg: TrainConfig):
    """The scheduler of `optimizer`, stepped once per epoch."""
    if cfg.schedule == "cosine" and cfg.warmup == 0:
        # The historical schedule, kept as it was so that earlier runs resume and reproduce bit for bit.
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))


def reschedule(optimizer, scheduler, cfg: TrainConfig, epoch: int) -> None:
    """After a resume that changed the number of epochs: the new total's schedule from `epoch` on."""
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = cfg.epochs
    factor = lr_factor(cfg)(epoch)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
