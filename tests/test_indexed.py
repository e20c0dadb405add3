"""IndexedDataset: every sample comes back with its own index, through any DataLoader."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from curriculoss import IndexedDataset


def test_tuples_get_their_index_through_a_shuffled_loader():
    x = torch.arange(20.0).unsqueeze(1) * 10
    y = torch.arange(20) % 3
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=6, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for xb, yb, index in loader:
        assert torch.equal(xb.squeeze(1), index.float() * 10) and torch.equal(yb, index % 3)
        seen += index.tolist()
    assert sorted(seen) == list(range(20)) and seen != list(range(20))


def test_dicts_get_a_key_and_other_samples_a_pair():
    dicts = IndexedDataset([{"pixel_values": torch.zeros(2), "labels": 1}] * 3)
    assert dicts[2]["index"] == 2 and dicts[2]["labels"] == 1
    batch = next(iter(DataLoader(dicts, batch_size=3)))
    assert torch.equal(batch["index"], torch.arange(3))
    assert IndexedDataset(["a", "b"])[1] == ("b", 1)
    assert IndexedDataset([[1, 2]])[0] == [1, 2, 0]
    assert len(IndexedDataset(range(7))) == 7


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="map-style dataset"):
        IndexedDataset(iter([1, 2]))
    with pytest.raises(KeyError, match="already have a key 'index'"):
        IndexedDataset([{"index": 5}])[0]
    with pytest.raises(ValueError, match="key must be"):
        IndexedDataset([1], key="")
