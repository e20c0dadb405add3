"""What does training in 2 processes cost the library's methods (time, bytes), and a data-parameter step at N = 10M?

Distributed training on CPU (gloo) and Data Parameters at N = 10 million, printed as markdown tables.

1. Communication and step time, 2 processes vs 1, same global batch (default 128), LeNet-5 on
   MNIST-sized random input: (a) CE + SuperLoss (tau='avg', per-sample smoothing over N = 60,000),
   (b) CE through joint Data Parameters (N = 60,000, momentum 0.9). A step is zero_grad, forward,
   loss, backward (DDP all-reduces the model's gradients) and the optimizer step(s). Bytes are those
   each rank hands to the collectives per step: the library's (SuperLoss / SparseSGD, counted by
   ``curriculoss.distributed.stats``) and DDP's gradient all-reduce (the model's gradient size).
   The 2-process runs are spawned with ``torch.multiprocessing`` (one thread per process).
2. Joint Data Parameters step (LeNet-5, batch 128, one process) with N = 10,000,000 instances vs
   N = 100,000: the two run interleaved (``benchmarks/_timing.py``), the ratio of the medians is printed
   (goal <= 1.10), with the memory the instance parameters and their momentum take.

    python benchmarks/bench_distributed.py [--steps 60] [--repeats 200] [--json FILE]

``--json FILE`` writes the figures with the command, the machine and the date.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from _results import begin, parser
from _steps import lenet_sgd, random_batch, sgd_step
from _timing import interleaved

from curriculoss import DataParameters, SuperLoss
from curriculoss import distributed as D
from curriculoss.harness.devices import end_distributed

N_TRAIN = 60_000


def _setup(kind: str, world: int, batch: int):
    torch.manual_seed(0)
    model, opt = lenet_sgd()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    g = torch.Generator().manual_seed(0)
    x, y = random_batch(batch, g)
    if kind == "superloss":
        crit = SuperLoss(tau="avg", lam=1.0, num_samples=N_TRAIN)
        dp, dp_opt = None, ()
    else:
        crit = None
        dp = DataParameters(10, N_TRAIN, level="joint")
        dp_opt = (dp.optimizer(),)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, net, opt, crit, dp, dp_opt, x, y, g, grad_bytes


def _run(kind: str, world: int, rank: int, batch: int, steps: int) -> tuple[float, float, int]:
    """Median step seconds, library bytes per step, DDP gradient bytes per step (this rank), on one thread."""
    torch.set_num_threads(1)
    model, net, opt, crit, dp, dp_opt, x, y, g, grad_bytes = _setup(kind, world, batch)
    times, comm = [], []
    for step in range(steps + 5):
        index = torch.randint(N_TRAIN, (batch,), generator=g)
        local = D.shard(torch.arange(batch), rank, world)
        li = index[local]
        if world > 1:
            dist.barrier()
        D.stats.reset()
        t0 = time.perf_counter()
        out = net(x[local])
        if crit is not None:
            loss = crit(F.cross_entropy(out, y[local], reduction="none"), li)
        else:
            loss = F.cross_entropy(dp(out, y[local], li), y[local])
        sgd_step(loss, opt, *dp_opt)
        dt = time.perf_counter() - t0
        if step >= 5:
            times.append(dt)
            comm.append(D.stats.bytes_sent)
    return statistics.median(times), statistics.median(comm), grad_bytes if world > 1 else 0


def _worker(rank: int, world: int, store: str, batch: int, steps: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    finished = False
    try:
        res = {kind: _run(kind, world, rank, batch, steps) for kind in ("superloss", "data-params")}
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
        finished = True
    finally:
        end_distributed(finished)  # the harness's ordered teardown


def _fmt_bytes(b: float) -> str:
    return f"{b:,.0f} B" if b < 10_000 else f"{b / 1024:,.1f} KiB"


def distributed_table(batch: int, steps: int) -> dict:
    one = {kind: _run(kind, 1, 0, batch, steps) for kind in ("superloss", "data-params")}
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "store"), batch, steps, tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
    print(f"\n### 2 processes vs 1 (gloo, CPU, LeNet-5, global batch {batch}, one thread per process, "
          f"median of {steps} steps)\n")
    print("| method | processes | step time | ratio to 1 process | library bytes sent / rank / step "
          "| DDP gradient bytes / rank / step |")
    print("|---|---|---|---|---|---|")
    record = {"global_batch": batch, "steps": steps, "methods": {}}
    for kind, label in (("superloss", "SuperLoss (avg) + smoothing, N = 60k"), ("data-params", "joint Data Parameters, N = 60k")):
        t1 = one[kind][0]
        t2 = max(r[kind][0] for r in ranks)  # the step is as slow as the slowest rank
        lib = max(r[kind][1] for r in ranks)
        print(f"| {label} | 1 | {t1 * 1e3:.2f} ms | 1.00 | 0 B | 0 B |")
        print(f"| {label} | 2 | {t2 * 1e3:.2f} ms | {t2 / t1:.2f} | {_fmt_bytes(lib)} | {_fmt_bytes(ranks[0][kind][2])} |")
        record["methods"][kind] = {"label": label, "step_ms_1": t1 * 1e3, "step_ms_2": t2 * 1e3,
                                   "library_bytes": lib, "ddp_bytes": ranks[0][kind][2]}
    print("\nLibrary bytes are O(global batch): SuperLoss gathers 32 B per sample, SparseSGD 16 B per "
          "gradient entry (one per sample and parameter tensor), plus the size exchanges; N does not enter.")
    return record


def scale_table(repeats: int, batch: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = random_batch(batch)
    variants = {}
    for n in (100_000, 10_000_000):
        model, opt = lenet_sgd()
        dp = DataParameters(10, n, level="joint")
        dp_opt = dp.optimizer()
        g = torch.Generator().manual_seed(n)

        def step(model=model, opt=opt, dp=dp, dp_opt=dp_opt, g=g, n=n) -> None:
            index = torch.randint(n, (batch,), generator=g)
            sgd_step(F.cross_entropy(dp(model(x), y, index), y), opt, dp_opt)

        variants[n] = (step, dp, dp_opt)
    # the warm-up also takes the first step, which projects the whole tensor once (O(N))
    timed = interleaved({str(n): fn for n, (fn, _, _) in variants.items()}, repeats, warmup=10)
    med = {n: timed[str(n)] for n in variants}
    print(f"\n### Joint Data Parameters step, N = 10M vs N = 100k (LeNet-5, batch {batch}, CPU, one thread, "
          f"interleaved, median of {repeats})\n")
    print("| N | step time | instance parameters + momentum |")
    print("|---|---|---|")
    for n, (_, dp, dp_opt) in variants.items():
        p = dp.log_instance_sigma
        mem = p.numel() * p.element_size() + dp_opt.state[p]["momentum_buffer"].numel() * p.element_size()
        print(f"| {n:,} | {med[n] * 1e3:.3f} ms | {mem / 2**20:,.1f} MiB |")
    ratio = med[10_000_000] / med[100_000]
    print(f"\nratio N = 10M / N = 100k: **{ratio:.3f}** (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    p = variants[10_000_000][1].log_instance_sigma
    mem = 2 * p.numel() * p.element_size()
    return {"repeats": repeats, "step_ms": {str(n): 1e3 * v for n, v in med.items()}, "ratio": ratio, "goal": 1.10,
            "memory_mib_10M": mem / 2**20}


def main() -> None:
    p = parser(__doc__, batch_size=128, repeats=(200, "interleaved repetitions (N = 10M vs 100k)"))
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration (2 vs 1 processes)")
    p.add_argument("--only", choices=("distributed", "scale"), help="run one of the two parts")
    args = p.parse_args()
    started = begin(args)
    record = {}
    if args.only != "scale":
        record["distributed"] = distributed_table(args.batch_size, args.steps)
    if args.only != "distributed":
        record["scale"] = scale_table(args.repeats, args.batch_size)
    started.write(args.json, "distributed", record)

if __name__ == "__main__":
    main()
