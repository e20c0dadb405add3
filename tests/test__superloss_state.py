"""curriculoss._superloss_state: the running threshold and the index checks against plain Python."""
import math

import pytest
import torch

from curriculoss._superloss_state import check_index_values, index_message, next_tau, valid_entries


def _state():
    return (torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64),
            torch.zeros((), dtype=torch.float64))


BATCHES = [[1.0, 2.0, float("nan")], [4.0, float("inf")], [float("nan")], [0.5, 0.5, 2.0]]


def test_avg_is_the_mean_of_every_valid_loss_so_far():
    loss_sum, count, tau = _state()
    seen = []
    for batch in BATCHES:
        x = torch.tensor(batch, dtype=torch.float64)
        next_tau("avg", 0.9, x, valid_entries(x, None, torch.float64), loss_sum, count, tau)
        seen += [v for v in batch if math.isfinite(v)]
        assert tau.item() == pytest.approx(sum(seen) / len(seen), rel=1e-15)


def test_ema_starts_at_the_first_batch_mean_and_skips_empty_batches():
    loss_sum, count, tau = _state()
    expected = None
    for batch in BATCHES:
        x = torch.tensor(batch, dtype=torch.float64)
        next_tau("ema", 0.9, x, valid_entries(x, None, torch.float64), loss_sum, count, tau)
        finite = [v for v in batch if math.isfinite(v)]
        if finite:
            mean = sum(finite) / len(finite)
            expected = mean if expected is None else 0.9 * expected + 0.1 * mean
        assert tau.item() == pytest.approx(expected, rel=1e-15)


def test_fixed_never_changes_and_ignored_entries_do_not_count():
    loss_sum, count, tau = _state()
    tau.fill_(0.7)
    x = torch.tensor([5.0, 6.0], dtype=torch.float64)
    assert next_tau("fixed", 0.9, x, valid_entries(x, None, torch.float64), loss_sum, count, tau).item() == 0.7
    keep = torch.tensor([True, False])
    assert valid_entries(torch.tensor([1.0, 2.0, ]), keep, torch.float64).tolist() == [True, False]
    assert valid_entries(torch.tensor([1.0, math.nan, -math.inf]), None, torch.float64).tolist() == [True, False, False]


def test_a_negative_index_is_refused_naming_the_range():
    check_index_values(torch.tensor([0, 9]), 10)
    check_index_values(torch.tensor([], dtype=torch.long), 10)
    with pytest.raises(IndexError, match=r"in \[0, 9\] \(num_samples=10\), got values in \[-1, 3\]"):
        check_index_values(torch.tensor([3, -1]), 10)
    with pytest.raises(IndexError, match=r"got values in \[0, 10\]"):
        check_index_values(torch.tensor([0, 10]), 10, both_ends=True)
    assert index_message(5, -2, 7) == ("index must hold dataset indices in [0, 4] (num_samples=5), "
                                       "got values in [-2, 7]")
