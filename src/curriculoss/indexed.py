"""Datasets that also return each sample's index, which the stateful methods and the recorder need.

SuperLoss's smoothing, the instance data parameters and `Recorder` keep one value
per training sample, so every batch must say which samples it holds. `IndexedDataset` wraps any
map-style dataset so that the index travels with the sample through any `DataLoader`, sampler or
collate function (shuffled, distributed or not).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

__all__ = ["IndexedDataset"]


class IndexedDataset(Dataset):
    """`dataset[i]` with `i` added: `(x, y)` becomes `(x, y, i)`, any tuple gets `i` appended,
    a dict (Hugging Face style) gets the key `key`; any other sample becomes `(sample, i)`.

    Args:
        dataset: a map-style dataset (`__getitem__` and `__len__`).
        key: the dict key that holds the index (default `'index'`); refused if the sample has it.

    Examples:
        >>> loader = DataLoader(IndexedDataset(train_set), batch_size=128, shuffle=True)
        >>> for x, y, index in loader:
        ...     loss = criterion(F.cross_entropy(model(x), y, reduction="none"), index)
    """

    def __init__(self, dataset: Any, key: str = "index"):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style dataset (with __getitem__ and __len__), "
                            f"got {type(dataset).__name__}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        if isinstance(sample, tuple):
            return (*sample, index)
        if isinstance(sample, list):
            return [*sample, index]
        if isinstance(sample, Mapping):
            if self.key in sample:
                raise KeyError(f"the dataset's samples already have a key {self.key!r}: pass "
                               f"IndexedDataset(dataset, key=...) with another name")
            return {**sample, self.key: index}
        return sample, index
