"""Distributed training (torch.distributed, gloo, CPU): every stateful part gives the single-process result.

Two processes are spawned once per module (file-store rendezvous, no port); each scenario runs there on
its slice of the global batch and, here, in one process on the whole global batch. Model parameters,
thresholds, smoothing buffers, data parameters and momentum buffers must agree to float64 tolerance.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from curriculoss import distributed
from curriculoss.data_parameters import DataParameters, SparseSGD
from curriculoss.harness.devices import end_distributed
from curriculoss.imae import imae
from curriculoss.superloss import SuperLoss


WORLD = 2


N_SAMPLES = 24  # dataset size of the scenarios


N_CLASSES = 4


STEPS = 6


def _batch_sizes() -> list[int]:
    # Unequal local sizes (13 -> 7 + 6) and an empty local batch (1 -> 1 + 0).
    return [12, 13, 1, 12, 9, 12][:STEPS]


def _local(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return x.tensor_split(world)[rank]


# ----------------------------------------------------------------------------------------- scenarios
def _superloss_module(rank: int, world: int, tau, smoothing: bool, sync: bool = True) -> dict:
    """SuperLoss alone on raw losses with NaN, ignored entries and duplicate indices (also across ranks)."""
    g = torch.Generator().manual_seed(1)
    crit = SuperLoss(tau=tau, lam=0.5, num_samples=N_SAMPLES if smoothing else None, reduction="none", sync=sync)
    outs, confs, taus = [], [], []
    for b in _batch_sizes():
        loss = torch.rand(b, generator=g, dtype=torch.float64) * 3
        loss[torch.rand(b, generator=g) < 0.1] = math.nan
        mask = torch.rand(b, generator=g) < 0.15
        index = torch.randint(N_SAMPLES // 3, (b,), generator=g)  # many duplicates
        out = crit(_local(loss, rank, world), _local(index, rank, world) if smoothing else None,
                   _local(mask, rank, world))
        outs.append(out)
        confs.append(crit.confidence)
        taus.append(crit.tau.clone())
    return {"out": outs, "conf": confs, "tau": torch.cat(taus), "state": dict(crit.state_dict())}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, N_CLASSES)).double()


class _Holder(nn.Module):
    """A model that holds its data parameters (DDP then wraps both; the data parameters stay SparseSGD's)."""

    def __init__(self, body: nn.Module, dp: DataParameters):
        super().__init__()
        self.body, self.dp = body, dp

    def forward(self, x):
        return self.body(x)


def _train(rank: int, world: int, method: str, sync: bool = True) -> dict:
    """A small model (DDP-wrapped when distributed) trained a few steps with ``method``.

    The rule of ``curriculoss.harness.train``: each rank's loss is its local mean times ``world * n_local /
    n_global`` (1 for equal slices), so that DDP's gradient average, and SparseSGD's, is the gradient
    of the global batch mean.
    """
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N_SAMPLES, 6, generator=g, dtype=torch.float64)
    y = torch.randint(N_CLASSES, (N_SAMPLES,), generator=g)
    model = _model()
    crit, dp, dp_opt = None, None, None
    if method.startswith("sl-"):
        tau = {"sl-avg": "avg", "sl-ema": "ema", "sl-fixed": math.log(N_CLASSES), "sl-avg-nosmooth": "avg"}[method]
        crit = SuperLoss(tau=tau, lam=1.0, num_samples=None if "nosmooth" in method else N_SAMPLES, sync=sync)
    elif method.startswith("dp-"):
        level = method.split("-")[1]
        dp = DataParameters(N_CLASSES, N_SAMPLES, level=level, dtype=torch.float64)
        dp_opt = dp.optimizer(class_lr=0.5, instance_lr=0.8, momentum=0.9, class_weight_decay=1e-2,
                              instance_weight_decay=1e-3,
                              class_grad="batch_mean" if method.endswith("batch_mean") else "class_mean")
        dp_opt.sync = sync
    held = _Holder(model, dp) if method.endswith("-inside") else model
    net = nn.parallel.DistributedDataParallel(held) if world > 1 else held
    opt = torch.optim.SGD(held.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3)
    optimizers = [o for o in (opt, dp_opt) if o is not None]  # the data parameters' own, where there are some
    confs = []
    for b in _batch_sizes():
        idx = torch.randint(N_SAMPLES, (b,), generator=g)  # duplicates within and across ranks
        li = _local(idx, rank, world)
        out = net(x[li])
        yb = y[li]
        if crit is not None:
            ce = F.cross_entropy(out, yb, reduction="none")
            loss = crit(ce, li if crit.num_samples is not None else None)
            confs.append(crit.confidence)
        elif dp is not None:
            loss = F.cross_entropy(dp(out, yb, li), yb) if len(li) else out.sum() * 0
        else:
            loss = imae(out, yb, T=4.0)  # every rank calls it: the weight sum is all-reduced
        if len(li) == 0:
            loss = out.sum() * 0  # the mean of nothing is NaN; this rank contributes zero gradient
        loss = loss * (world * len(li) / b)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
    result = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "conf": confs}
    if crit is not None:
        result["state"] = dict(crit.state_dict())
    if dp is not None:
        result["state"] = dict(dp.state_dict())
        result["momentum"] = [dp_opt.state[p]["momentum_buffer"].clone() for p in dp.data_parameters()]
        result["steps"] = [dp_opt.state[p]["step"] for p in dp.data_parameters()]
    return result


SL_MODULE_CASES = [(tau, s) for tau in ("avg", "ema", 0.7) for s in (True, False)]


TRAIN_CASES = ["sl-avg", "sl-ema", "sl-fixed", "sl-avg-nosmooth", "dp-class", "dp-instance", "dp-joint",
               "dp-joint-batch_mean", "dp-instance-inside", "imae"]


def _all_scenarios(rank: int, world: int) -> dict:
    results = {}
    for tau, s in SL_MODULE_CASES:
        results[("sl-module", tau, s)] = _superloss_module(rank, world, tau, s)
    for m in TRAIN_CASES:
        results[("train", m)] = _train(rank, world, m)
    # negative controls: without synchronisation the ranks drift from the single-process run
    results[("sl-module-nosync",)] = _superloss_module(rank, world, "ema", True, sync=False)
    results[("train-nosync",)] = _train(rank, world, "dp-joint", sync=False)
    return results


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(backend="gloo", world_size=world, rank=rank, init_method=Path(store).as_uri())
    try:
        distributed.stats.reset()
        results = _all_scenarios(rank, world)
        sizes = [3, 0][rank]  # unequal and empty local sizes, several dtypes, extra dimensions
        results["gather"] = distributed.all_gather_cat(
            torch.arange(sizes) + 10 * rank, torch.ones(sizes, 2, dtype=torch.bool), torch.full((sizes,), rank + 0.5))
        results["reduce"] = distributed.all_reduce_sum(torch.tensor([rank + 1.0, 2.0]))
        results["comm"] = (distributed.stats.bytes_sent, distributed.stats.calls)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    except BaseException:
        end_distributed(False)  # no barrier after an error: the other rank would wait for this one
        raise
    end_distributed(True)  # the harness's teardown: a rank leaving early can abort in interpreter shutdown


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, str(tmp / "store"), str(tmp)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    reference = _all_scenarios(0, 1)
    return reference, ranks


def _close(a, b, msg=""):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True, msg=lambda m: f"{msg}: {m}")


def _cat_ranks(ranks, key, field):
    return [torch.cat([r[key][field][s] for r in ranks]) for s in range(len(ranks[0][key][field]))]


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("tau,smoothing", SL_MODULE_CASES)
def test_superloss_state_and_outputs_match_one_process(runs, tau, smoothing):
    reference, ranks = runs
    key = ("sl-module", tau, smoothing)
    ref = reference[key]
    for r in ranks:  # every rank holds the single-process state
        _close(r[key]["tau"], ref["tau"], "tau")
        for name, value in ref["state"].items():
            _close(r[key]["state"][name], value, name)
    for s, (out, conf) in enumerate(zip(_cat_ranks(ranks, key, "out"), _cat_ranks(ranks, key, "conf"))):
        _close(out, ref["out"][s], f"output of step {s}")
        _close(conf, ref["conf"][s], f"confidence of step {s}")


@pytest.mark.parametrize("method", TRAIN_CASES)
def test_ddp_training_matches_one_process(runs, method):
    reference, ranks = runs
    key = ("train", method)
    ref = reference[key]
    for r in ranks:
        for name, value in ref["model"].items():
            _close(r[key]["model"][name], value, f"model {name}")
        for name, value in ref.get("state", {}).items():
            _close(r[key]["state"][name], value, name)
        for a, b in zip(r[key].get("momentum", []), ref.get("momentum", [])):
            _close(a, b, "momentum buffer")
        assert r[key].get("steps") == ref.get("steps")
    if ref["conf"]:
        for s, conf in enumerate(_cat_ranks(ranks, key, "conf")):
            _close(conf, ref["conf"][s], f"confidence of step {s}")
    # the model moved: the comparison is not vacuous
    assert not torch.equal(ref["model"]["0.weight"], _model().state_dict()["0.weight"])


def test_ranks_communicated(runs):
    _, ranks = runs
    assert all(r["comm"][1] > 0 and r["comm"][0] > 0 for r in ranks)


def test_collective_helpers(runs):
    _, ranks = runs
    for r in ranks:
        idx, flags, vals = r["gather"]
        assert idx.tolist() == [0, 1, 2] and flags.dtype == torch.bool and flags.shape == (3, 2) and flags.all()
        assert vals.tolist() == [0.5] * 3
        assert r["reduce"].tolist() == [3.0, 4.0]


def test_global_batch_sampler_gives_the_single_process_batches():
    one = list(distributed.GlobalBatchSampler(23, 5, seed=3, rank=0, world_size=1))
    two = [list(distributed.GlobalBatchSampler(23, 5, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 5
    for batch, a, b in zip(one, *two):
        assert a + b == batch and abs(len(a) - len(b)) <= 1
    # the order of curriculoss.harness.train: randperm seeded with seed * 100_003 + epoch
    order = torch.randperm(23, generator=torch.Generator().manual_seed(3 * 100_003)).tolist()
    assert sum(one, []) == order
    sampler = distributed.GlobalBatchSampler(23, 5, seed=3, rank=0, world_size=1)
    sampler.set_epoch(1)
    assert list(sampler) != one


def test_without_sync_the_ranks_differ(runs):
    """Negative control: the equality above is the synchronisation's doing."""
    reference, ranks = runs
    for r in ranks:
        assert not torch.allclose(r[("sl-module-nosync",)]["tau"], reference[("sl-module", "ema", True)]["tau"])
        ref_state = reference[("train", "dp-joint")]["state"]
        assert not torch.allclose(r[("train-nosync",)]["state"]["log_instance_sigma"], ref_state["log_instance_sigma"])


# ----------------------------------------------------------------------------------------- no collective
def _forbid_collectives(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a collective was called outside a multi-process group")
    for name in ("all_reduce", "all_gather", "broadcast", "all_gather_into_tensor", "reduce_scatter"):
        monkeypatch.setattr(dist, name, boom)


def _exercise_everything():
    for tau in ("avg", "ema"):
        crit = SuperLoss(tau=tau, num_samples=10)
        crit(torch.rand(6, dtype=torch.float64), torch.tensor([0, 1, 1, 2, 3, 9]))
        SuperLoss(tau=tau)(torch.rand(6))
    dp = DataParameters(3, 10, level="joint")
    opt = dp.optimizer()
    logits = torch.randn(5, 3, requires_grad=True)
    y, i = torch.randint(3, (5,)), torch.randint(10, (5,))
    F.cross_entropy(dp(logits, y, i), y).backward()
    opt.step()
    distributed.all_reduce_sum(torch.ones(2))
    distributed.all_gather_cat(torch.ones(2), torch.ones(2))


def test_no_collective_without_process_group(monkeypatch):
    assert not dist.is_initialized()
    _forbid_collectives(monkeypatch)
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.rank() == 0
    _exercise_everything()


def test_no_collective_with_world_size_one(monkeypatch, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        _forbid_collectives(monkeypatch)
        assert not distributed.is_distributed() and distributed.world_size() == 1
        _exercise_everything()
    finally:
        monkeypatch.undo()
        dist.destroy_process_group()


def test_sync_false_keeps_per_process_state():
    assert SuperLoss(sync=False).sync is False
    dp = DataParameters(3, 10)
    assert isinstance(dp.optimizer(), SparseSGD) and dp.optimizer().sync is True
