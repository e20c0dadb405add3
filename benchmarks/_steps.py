"""The hand-written training steps the speed benchmarks time, and the plain cross-entropy epoch they compare
the harness against: LeNet-5 on MNIST-sized random batches, SGD with momentum 0.9.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from curriculoss.harness.models import LeNet5

__all__ = ["random_batch", "index_draws", "lenet_sgd", "sgd_step", "ce_epoch"]


def random_batch(batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` MNIST-sized random images and labels of 10 classes (from ``generator``, else torch's own)."""
    x = torch.randn(batch, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return x, y


def index_draws(batch: int, seed: int = 0) -> Callable[[int], torch.Tensor]:
    """``draw(n)``: ``batch`` sample indices below ``n``, the draws from one generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return lambda n: torch.randint(0, n, (batch,), generator=gen)


def lenet_sgd(lr: float = 0.01) -> tuple[LeNet5, torch.optim.SGD]:
    """A LeNet-5 for 28x28 images of 10 classes and its SGD (momentum 0.9)."""
    model = LeNet5(1, 10, 28)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def sgd_step(loss: torch.Tensor, *optimizers) -> None:
    """One step: every optimizer's zero_grad, the backward of ``loss``, then every optimizer's step."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()


def ce_epoch(model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
    """One epoch of plain cross-entropy, in batches of a random order drawn from ``seed``."""
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        sgd_step(F.cross_entropy(model(x[idx]), y[idx]), opt)
