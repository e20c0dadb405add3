"""curriculoss._sparse: `SparseSGD` and the sparse gather against dense references and row loops."""
import pytest
import torch
import torch.nn.functional as F

from curriculoss.data_parameters import DataParameters, SparseSGD


K, N = 5, 40


def test_backward_is_sparse_with_one_entry_per_sample():
    dp = DataParameters(K, 10_000, level="joint")
    y = torch.randint(K, (16,))
    idx = torch.randint(10_000, (16,))
    F.cross_entropy(dp(torch.randn(16, K), y, idx), y).backward()
    for p in dp.data_parameters():
        assert p.grad.is_sparse and p.grad._nnz() == 16


def test_sparse_sgd_validation():
    with pytest.raises(ValueError, match="momentum"):
        SparseSGD([torch.nn.Parameter(torch.zeros(3))], momentum=1.5)
    with pytest.raises(ValueError, match="1-D"):
        SparseSGD([torch.nn.Parameter(torch.zeros(3, 2))])


@pytest.mark.parametrize("name,value", [
    ("instance_lr", -1.0), ("instance_lr", float("nan")), ("class_lr", float("inf")), ("class_lr", -0.1),
    ("instance_weight_decay", -1.0), ("class_weight_decay", float("nan")), ("momentum", -0.1),
    ("momentum", 1.0), ("momentum", float("nan")),
])
def test_optimizer_refuses_bad_rates_momentum_and_weight_decay(name, value):
    # The reproduction: instance_lr=-1 and instance_weight_decay=-1 were accepted and stepped the wrong way.
    dp = DataParameters(3, 6, level="joint")
    with pytest.raises(ValueError, match=name):
        dp.optimizer(**{name: value})


def test_sparse_sgd_checks_every_param_group():
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    for key, value in (("lr", -1.0), ("lr", float("nan")), ("weight_decay", -1e-4), ("weight_decay", float("inf")),
                       ("momentum", 1.5), ("momentum", -0.5)):
        with pytest.raises(ValueError, match=rf"param_groups\[1\]\['{key}'\]"):
            SparseSGD([{"params": [p]}, {"params": [q], key: value}])
        with pytest.raises(ValueError, match=key):
            SparseSGD([p], **{key: value})
    # the accepted edges
    SparseSGD([{"params": [p], "lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd_mode", ["per_row", "per_sample"])
@pytest.mark.parametrize("clamp", [None, (-0.3, 0.4)])
def test_sparse_sgd_with_repeated_rows_matches_row_loop(momentum, wd_mode, clamp):
    """SparseSGD updates the entries of the sparse gradient as they are (rows repeat where the batch
    repeats them): checked against a loop over the distinct rows, every option combination."""
    n, lr, wd = 12, 0.7, 0.05
    gen = torch.Generator().manual_seed(5)
    p = torch.nn.Parameter(torch.empty(n, dtype=torch.float64).uniform_(-0.5, 0.5, generator=gen))
    opt = SparseSGD([p], lr=lr, momentum=momentum, weight_decay=wd, log_clamp=clamp, weight_decay_mode=wd_mode)
    w, buf = p.detach().clone(), torch.zeros(n, dtype=torch.float64)
    batches = [torch.tensor([3, 3, 3, 7]), torch.tensor([7, 1, 7, 11, 1]), torch.randint(n, (20,), generator=gen)]
    for step, idx in enumerate(batches):
        vals = torch.randn(idx.shape[0], dtype=torch.float64, generator=gen)
        p.grad = torch.sparse_coo_tensor(idx.unsqueeze(0), vals, (n,))
        opt.step()
        for r in sorted(set(idx.tolist())):  # the reference, one distinct row at a time
            hits = idx == r
            decay = wd * w[r] * (int(hits.sum()) if wd_mode == "per_sample" else 1)
            buf[r] = momentum * buf[r] + vals[hits].sum() + decay
            w[r] = w[r] - lr * buf[r]
            if clamp is not None:
                w[r] = w[r].clamp(*clamp)
        if clamp is not None and step == 0:
            w.clamp_(*clamp)
        torch.testing.assert_close(p.detach(), w, rtol=1e-13, atol=1e-15)
        if momentum:
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf, rtol=1e-13, atol=1e-15)
