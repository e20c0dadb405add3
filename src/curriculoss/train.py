"""One training run: data, label noise, model, method, a plain epoch loop, a run folder, exact resume.

The loop is deliberately plain. Each epoch's sample order comes from a generator seeded with
``(seed, epoch)``, so a run resumed from its last end-of-epoch checkpoint replays the interrupted epoch
exactly; the checkpoint also holds every RNG state, model, optimizer(s), method state (thresholds,
smoothing buffers, data parameters), the metrics so far and the per-sample signals.

Run folder::

    args.json      the configuration
    metrics.csv    one row per epoch
    signals.npz    loss, confidence and margin (epochs x N), labels, predicted, true_labels, noise_mask
                   (written by a :class:`curriculoss.recorder.Recorder`, as a user's own loop would)
    results.json   best and final test metric (written when the run ends)
    checkpoint.pt  written atomically after every epoch, loaded with weights_only=True
    .lock          held by the run writing the folder (a second run is refused; see curriculoss.runlock)
    curves.png     learning curves (with matplotlib installed)

Distributed (``torchrun --nproc_per_node K -m curriculoss train ...``, or :func:`train` called in an
initialised process group): ``batch_size`` stays the *global* batch, with the single-process sample
order; each global batch is split into contiguous rank slices (:func:`curriculoss.distributed.shard`)
and the model is wrapped in ``DistributedDataParallel``. Rank ``r``'s loss (a mean over its ``n_r``
samples) is scaled by ``K * n_r / n_global``, so that DDP's gradient average, and that of
:class:`~curriculoss.SparseSGD` for the data parameters (which DDP does not wrap), is the gradient of
the global batch mean; SuperLoss's threshold and smoothing are synchronised by the module itself.
Per-sample signals and the metric sums are gathered once per epoch, every rank evaluates the same model
on the test set, and only rank 0 writes the run folder; every rank resumes from the same checkpoint, so
a resumed run ends as an uninterrupted one. Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing of
this happens. Models with BatchNorm (``resnet``) keep per-rank batch statistics under DDP, so they do not
reproduce the single-process run exactly.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curriculoss import datasets, noise
from curriculoss._checks import check_number
from curriculoss import distributed as dist_utils
from curriculoss.methods import MethodOptions, build_method
from curriculoss.models import build_model
from curriculoss.recorder import Recorder
from curriculoss.runlock import run_folder_lock

__all__ = ["TrainConfig", "train", "prepare_data", "load_checkpoint", "CheckpointError", "check_config"]


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    task: str = "classification"
    limit: int | None = None
    model: str = "mlp"
    method: str = "ce"
    noise: str = "symmetric"
    noise_rate: float = 0.0
    noise_file: str | None = None  # the noisy labels for noise='file' (.npy or .csv)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    options: MethodOptions = field(default_factory=MethodOptions)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        data["options"] = MethodOptions(**data.get("options", {}))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated or from another configuration)."""


METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc_noisy", "train_acc_true", "test_metric", "method_stat", "seconds")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prepare_data(cfg: TrainConfig):
    """The data set of a configuration and its noisy training labels."""
    data = datasets.load(cfg.dataset, data_dir=cfg.data_dir, task=cfg.task, limit=cfg.limit)
    if len(data.y_train) == 0:
        raise ValueError(f"{cfg.data_dir or cfg.dataset}: the training set is empty; nothing to train on")
    y_true = data.y_train
    if cfg.task == "regression":
        noisy = noise.regression(y_true, cfg.noise_rate, low=float(y_true.min()), high=float(y_true.max()), seed=cfg.seed) \
            if cfg.noise_rate > 0 else noise.NoisyLabels(y_true.copy(), np.zeros(len(y_true), bool))
    else:
        kind = cfg.noise if (cfg.noise_rate > 0 or cfg.noise == "file") else "none"
        noisy = noise.apply(kind, y_true, cfg.noise_rate, num_classes=data.num_classes, seed=cfg.seed,
                            path=cfg.noise_file)
    return data, noisy


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, regression: bool, batch_size: int = 1024) -> float:
    """Test accuracy (classification) or mean absolute error (regression)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            if regression:
                total += (out.squeeze(-1) - y[i:i + batch_size]).abs().sum().item()
            else:
                total += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train()
    return total / max(len(x), 1)


_FLOAT32_MAX = 3.4028234663852886e38


def check_config(cfg: TrainConfig) -> None:
    """The optimisation settings of a configuration, before anything is loaded: a NaN, negative or
    overflowing rate would train silently on garbage (``lr=nan`` ran to the end with accuracy 0.1) or
    fail deep in the optimizer (``lr=1e300`` does not fit the float32 parameters)."""
    check_number("lr", cfg.lr, low=0.0, high=_FLOAT32_MAX, low_open=True)
    check_number("momentum", cfg.momentum, low=0.0, high=1.0, high_open=True)
    check_number("weight_decay", cfg.weight_decay, low=0.0, high=_FLOAT32_MAX)
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _init_distributed_from_env() -> bool:
    """Under torchrun (``WORLD_SIZE`` > 1) start the default process group; True if this call started it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("gloo")  # the training loop runs on the CPU
    return True


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False, progress: bool = True,
          position: int = 0) -> dict[str, Any]:
    """Train one model; returns ``{'best': ..., 'final': ..., 'metric': 'accuracy'|'mae', ...}``.

    With ``run_dir`` the run folder is written; with ``resume=True`` the run continues from its
    ``checkpoint.pt`` (a missing checkpoint starts from scratch; a corrupt one raises
    :class:`CheckpointError`). Under ``torchrun`` it trains data-parallel (see the module docstring).
    """
    check_config(cfg)
    started = _init_distributed_from_env()
    try:
        # One run per folder (curriculoss.runlock); only the writing rank holds it.
        with run_folder_lock(run_dir) if run_dir is not None and dist_utils.rank() == 0 else nullcontext():
            return _train(cfg, run_dir, resume=resume, progress=progress, position=position)
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False, progress: bool = True,
           position: int = 0) -> dict[str, Any]:
    from tqdm.auto import tqdm

    world, rank = dist_utils.world_size(), dist_utils.rank()
    distributed = dist_utils.is_distributed()
    writer = rank == 0  # only rank 0 writes the run folder
    run_dir = Path(run_dir) if run_dir is not None else None
    regression = cfg.task == "regression"
    data, noisy = prepare_data(cfg)
    n = len(data.y_train)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    x_train = torch.from_numpy(data.x_train)
    x_test = torch.from_numpy(data.x_test)
    target_dtype = torch.float32 if regression else torch.int64
    y_train = torch.from_numpy(np.asarray(noisy.labels)).to(target_dtype)
    y_clean = torch.from_numpy(np.asarray(data.y_train)).to(target_dtype)
    y_test = torch.from_numpy(np.asarray(data.y_test)).to(target_dtype)

    model = build_model(cfg.model, tuple(data.input_shape), 1 if regression else data.num_classes)
    method = build_method(cfg.method, cfg.options, None if regression else data.num_classes, n)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    method_optimizer = method.make_optimizer()

    history: list[dict[str, float]] = []
    recorder = Recorder(n)  # the per-sample signals, exactly as a user's own loop records them
    start_epoch = 0

    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if run_dir is not None:
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            if state["config"] != cfg.to_json():
                raise CheckpointError(f"{ckpt_path} was written by another configuration; start a new run folder")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            method.load_state_dict(state["method"])
            if method_optimizer is not None:
                method_optimizer.load_state_dict(state["method_optimizer"])
            history = state["history"]
            recorder.load_state_dict(_recorder_state(state, n))
            start_epoch = state["epoch"]
            torch.set_rng_state(state["rng"]["torch"])
        if writer:
            _atomic_write(run_dir / "args.json", lambda fh: fh.write((json.dumps(cfg.to_json(), indent=2) + "\n").encode()))

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not progress or not writer,
               desc=f"{cfg.method} r={cfg.noise_rate:g} s={cfg.seed}", position=position, leave=False,
               dynamic_ncols=True)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        # Running sums stay tensors: one host synchronisation per epoch, not per step.
        sum_loss, correct_noisy, correct_true = torch.zeros(()), torch.zeros(()), torch.zeros(())
        lr = optimizer.param_groups[0]["lr"]
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if distributed:
                global_idx, idx = idx, dist_utils.shard(idx, rank, world)
            xb, yb = x_train[idx], y_train[idx]
            out = net(xb)
            loss = method(out, yb, idx)
            if distributed:
                # Rank r's mean times K n_r / n: DDP's (and SparseSGD's) average is the global batch mean.
                loss = loss * (world * len(idx) / len(global_idx)) if len(idx) else out.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            if method_optimizer is not None:
                method_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if method_optimizer is not None:
                method_optimizer.step()
            with torch.no_grad():
                recorder.update(idx, out, yb, confidence=method.confidence, loss=method.per_sample_loss)
                sum_loss += method.per_sample_loss.sum()
                pred = out.squeeze(-1).round() if regression else out.argmax(1)
                correct_noisy += (pred == yb).sum()
                correct_true += (pred == y_clean[idx]).sum()
            bar.update(1)
        scheduler.step()
        recorder.end_epoch()  # distributed: gathers every rank's shard
        if distributed:
            sums = dist_utils.all_reduce_sum(torch.stack([sum_loss.double(), correct_noisy.double(), correct_true.double()]))
            sum_loss, correct_noisy, correct_true = sums.unbind()
            # summary() reads the last batch's signals: give it the global batch's, as one process has them.
            method.per_sample_loss = recorder.last("loss")[global_idx]
            if method.confidence is not None:
                method.confidence = recorder.last("confidence")[global_idx]
        stat = method.summary()
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": float(sum_loss) / n, "train_acc_noisy": float(correct_noisy) / n,
            "train_acc_true": float(correct_true) / n, "test_metric": _evaluate(model, x_test, y_test, regression),
            "method_stat": float("nan") if stat is None else stat, "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        bar.set_postfix(test=f"{row['test_metric']:.4f}")
        if run_dir is not None and writer:
            state = {
                "config": cfg.to_json(), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(),
                "method_optimizer": method_optimizer.state_dict() if method_optimizer is not None else None,
                "history": history, "recorder": recorder.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
            }
            _atomic_write(ckpt_path, lambda fh: torch.save(state, fh))
            _write_metrics(run_dir, history)
    bar.close()

    metric = "mae" if regression else "accuracy"
    tests = [r["test_metric"] for r in history]
    best = min(tests) if regression else max(tests)
    results = {"metric": metric, "best": best, "final": tests[-1], "epochs": cfg.epochs,
               "realised_noise_rate": float(noisy.rate), "seconds": sum(r["seconds"] for r in history)}
    if run_dir is not None and writer:
        recorder.save(run_dir / "signals.npz", labels=np.asarray(noisy.labels), true_labels=np.asarray(data.y_train),
                      noise_mask=np.asarray(noisy.mask))
        _atomic_write(run_dir / "results.json", lambda fh: fh.write((json.dumps(results, indent=2) + "\n").encode()))
        _plot_curves(run_dir, history, metric)
    return results


def _recorder_state(state: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    """The recorder's state of a checkpoint; one written before the recorder (``loss_signal`` and
    ``conf_signal``, ``(epochs, N)`` with NaN rows ahead) gives its finished epochs and no margins."""
    if "recorder" in state:
        return state["recorder"]
    done = state["epoch"]
    loss, conf = state["loss_signal"][:done], state["conf_signal"][:done]
    return {"loss": loss, "confidence": conf, "margin": torch.full_like(loss, float("nan")),
            "labels": torch.full((n,), -1, dtype=torch.int64), "predicted": torch.full((n,), -1, dtype=torch.int64)}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a damaged file raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}; "
                              "it is corrupt or truncated (delete it to restart the run from scratch)") from exc
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a curriculoss checkpoint")
    return state


def _write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    def write(fh):
        import io
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(history)
        fh.write(text.getvalue().encode())
    _atomic_write(run_dir / "metrics.csv", write)


def _plot_curves(run_dir: Path, history: list[dict[str, float]], metric: str) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(epochs, [r["train_loss"] for r in history])
    axes[0].set(xlabel="epoch", ylabel="train loss (task loss, noisy labels)")
    axes[1].plot(epochs, [r["test_metric"] for r in history], label=f"test {metric}")
    axes[1].plot(epochs, [r["train_acc_noisy"] for r in history], label="train acc (noisy labels)")
    axes[1].plot(epochs, [r["train_acc_true"] for r in history], label="train acc (true labels)")
    axes[1].set(xlabel="epoch")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)
