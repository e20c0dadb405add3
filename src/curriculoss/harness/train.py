"""One training run: data, label noise, model, method, a plain epoch loop, a run folder, exact resume.

The loop is deliberately plain. Each epoch's sample order comes from a generator seeded with
`(seed, epoch)`, so a run resumed from its last end-of-epoch checkpoint replays the interrupted epoch
exactly; the checkpoint also holds every RNG state, model, optimizer(s), method state (thresholds,
smoothing buffers, data parameters), the metrics so far and the per-sample signals.

Run folder::

    args.json      the configuration
    config.toml    the same, as the options of `curriculoss train --config` (which trains it again)
    metrics.csv    one row per epoch
    signals/       loss.npy, confidence.npy and margin.npy (epochs x N), each grown by one row per epoch;
                   labels.npy, predicted.npy, true_labels.npy, noise_mask.npy when the run ends (written by a
                   streaming `curriculoss.recorder.Recorder`, as a user's own loop would; `curriculoss.signals`)
    results.json   best and final test metric (written when the run ends)
    checkpoint.pt  written atomically after every epoch, loaded with weights_only=True
    resumes.json   what each resume changed (more epochs, another device, ...), at which epoch
    .lock          held by the run writing the folder, from when its data and model are ready (a second run
                   is refused; see curriculoss.harness.runlock)
    curves.png     learning curves (with matplotlib installed)

A new run in a folder that holds one is refused (`RunFolderExists`) unless `overwrite=True`;
a resume continues the checkpoint's configuration, changed at most in where it trains
(`RUNTIME_FIELDS`) and, with `more_epochs=True`, in more epochs (recorded in `resumes.json`).
Progress goes to stderr: a tqdm bar on a terminal, else one plain line per epoch (no carriage return or
escape code, for log files and pipes).

Distributed (`torchrun --nproc_per_node K -m curriculoss train ...`, or `train` called in an
initialised process group): `batch_size` stays the *global* batch, with the single-process sample
order; each global batch is split into contiguous rank slices (`curriculoss.distributed.shard`)
and the model is wrapped in `DistributedDataParallel`. Rank `r`'s loss (a mean over its `n_r`
samples) is scaled by `K * n_r / n_global`, so that DDP's gradient average, and that of
`SparseSGD` for the data parameters (which DDP does not wrap), is the gradient of
the global batch mean; SuperLoss's threshold and smoothing are synchronised by the module itself.
Per-sample signals and the metric sums are gathered once per epoch, every rank evaluates the same model
on the test set, and only rank 0 writes the run folder; every rank resumes from the same checkpoint, so
a resumed run ends as an uninterrupted one. Outside `torchrun` (`WORLD_SIZE` unset or 1) nothing of
this happens. Models with BatchNorm (`resnet`) keep per-rank batch statistics under DDP, so they do not
reproduce the single-process run exactly.

Devices (`resolve_device`): `device='auto'` trains on CUDA when it is available, else on the CPU;
`'cpu'`, `'cuda'`, `'cuda:N'` and `'mps'` name one. The data set, model, method state and
per-sample signals live on the device, and the epoch's sums stay tensors there: the host waits for
the device once per epoch (for the epoch's numbers) plus once for the method's summary. Under
`torchrun` on CUDA the process group uses NCCL and each rank trains on GPU `LOCAL_RANK`.
`amp='bf16'` or `'fp16'` runs the model's forward pass under `torch.autocast` (fp16 with a
gradient scaler); the method's loss is computed on the float32 output, so the losses' state keeps its
float32/float64 dtype. `compile=True` wraps the model in `torch.compile` and runs SuperLoss's step
as one compiled graph (`SuperLoss(fused=True)`). A checkpoint holds
CPU tensors only, whatever the device, so a run started on a GPU resumes on a CPU and the other way
round (`device` and `compile` are not part of the configuration a checkpoint must match).

Streamed data (`stream='yes'`, or `'auto'` when an `imagefolder` set's decoded size exceeds a
quarter of `available_memory`): the set is a list of files
(`ImageFiles`), and a `DataLoader` with `workers`
processes decodes exactly the index batches the loop cuts from the epoch's seeded order (this rank's
slice under `torchrun`), so noise, per-sample indices, signals, augmentation and resume are those of
the in-memory run, bit for bit; the test set streams in the same 1024-sample batches.

Augmentation (`augment='crop-flip'`, the default for cifar10 and cifar100; see
`curriculoss.harness.augment`) is applied batch-wise on the device from a generator seeded with
`(seed, epoch, rank)`, so a resumed epoch replays the same crops and flips. Schedules: `cosine`
(annealing to 0 over the epochs after the warmup) or `step` (times `gamma` at each epoch of
`milestones`), after `warmup` epochs of linear warmup (epoch `e < warmup` at
`lr (e + 1) / (warmup + 1)`).
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import os
import random
import shutil
import sys
import time
import types
import typing
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curriculoss import distributed as dist_utils
from curriculoss import noise
from curriculoss._checks import check_number
from curriculoss.harness import data as datasets
from curriculoss.harness.augment import AUGMENTS, augment as augment_batch
from curriculoss.harness.data.imagefolder import ImageFiles
from curriculoss.harness.divergence import ADVICE, chance_accuracy, find_divergence, window_accuracies
from curriculoss.harness.methods import EPOCH_COLUMNS, MethodOptions, accumulator_dtype, build_method
from curriculoss.harness.models import _one_line, build_model, check_model_name, is_factory, probe_model
from curriculoss.harness.runlock import check_not_in_use, run_folder_lock
from curriculoss.recorder import Recorder
from curriculoss.superloss import SuperLoss

__all__ = ["TrainConfig", "train", "prepare_data", "load_checkpoint", "CheckpointError", "RunFolderExists",
           "check_config", "resolve_device", "build_checked_model", "toml_text", "RUNTIME_FIELDS", "RUN_FILES",
           "run_files_in", "clear_run_folder"]


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
    augment: str | None = None  # None: crop-flip for cifar10/cifar100, else none
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # step schedule: epochs where lr *= gamma
    gamma: float = 0.1
    warmup: int = 0  # epochs of linear warmup
    image_size: int = 32  # imagefolder only
    skip_bad_images: bool = False  # imagefolder only
    device: str = "auto"  # runtime: not compared with a checkpoint's configuration
    amp: str | None = None  # None, 'bf16' or 'fp16'
    compile: bool = False  # runtime
    workers: int = 0  # runtime: imagefolder decoding processes (at load time, and per batch when streamed)
    stream: str = "auto"  # runtime: imagefolder 'auto', 'yes' (decode per batch) or 'no' (in memory)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        data["options"] = MethodOptions(**_options_before_defaults_changed(data.get("options", {})))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: Configuration fields that say *where* a run trains, not *what* it trains: a checkpoint resumes
#: whatever their values.
RUNTIME_FIELDS = ("device", "compile", "workers", "stream")

SCHEDULES = ("cosine", "step")
STREAM_MODES = ("auto", "yes", "no")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _same_run(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    # Fields a configuration did not have yet (an older args.json) count as their defaults.
    defaults = TrainConfig().to_json()
    keys = (set(a) | set(b)) - set(RUNTIME_FIELDS) - set(ignore)
    return all(a.get(k, defaults.get(k)) == b.get(k, defaults.get(k)) for k in keys)


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


def _to_cpu(obj):
    """`obj` with every tensor moved to the CPU (a checkpoint must load on a machine without the GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _lr_lambda(cfg: "TrainConfig"):
    """The learning-rate factor of epoch `e` (0-based) for the warmup and the schedule."""
    def factor(e: int) -> float:
        if e < cfg.warmup:
            return (e + 1) / (cfg.warmup + 1)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(1 for m in cfg.milestones if e >= m)
        span = cfg.epochs - cfg.warmup
        return 0.5 * (1.0 + math.cos(math.pi * (e - cfg.warmup) / span)) if span > 0 else 1.0
    return factor


def _make_scheduler(optimizer, cfg: "TrainConfig"):
    if cfg.schedule == "cosine" and cfg.warmup == 0:
        # The historical schedule, kept as it was so that earlier runs resume and reproduce bit for bit.
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))


def _default_augment(cfg: "TrainConfig") -> str:
    if cfg.augment is not None:
        return cfg.augment
    return "crop-flip" if cfg.dataset in ("cifar10", "cifar100") else "none"


def _options_before_defaults_changed(options: dict[str, Any]) -> dict[str, Any]:
    """A configuration written before an option existed keeps the behaviour it was trained with."""
    options = dict(options)
    options.setdefault("sl_normalise", False)  # SuperLoss's normalised step became the default later
    return {k: v for k, v in options.items() if k in {f.name for f in fields(MethodOptions)}}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated or from another configuration)."""


class RunFolderExists(ValueError):
    """A new run was asked for in a folder that holds a run (or a bench grid) already."""


#: The files a run writes into its folder; with `curriculoss flag`'s, what `overwrite=True` removes.
RUN_FILES = ("args.json", "config.toml", "metrics.csv", "signals", "signals.npz", "results.json", "checkpoint.pt",
             "resumes.json", "curves.png")
_FLAG_FILES = ("suspects.csv", "flag.json", "signals.png", "scores.png")


def run_files_in(run_dir: str | Path) -> list[str]:
    """The run files that `run_dir` holds (none: it holds no run)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def clear_run_folder(run_dir: str | Path) -> None:
    """Remove a run's files (and `curriculoss flag`'s) from `run_dir`; any other file stays."""
    for name in (*RUN_FILES, *_FLAG_FILES):
        for path in (Path(run_dir) / name, Path(run_dir) / (name + ".tmp")):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def _claim_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a bench folder, and a new run in a folder holding one unless it is to be overwritten."""
    if (run_dir / "grid.json").exists():
        raise RunFolderExists(f"{run_dir} is a bench folder (grid.json), not a run folder; choose another --out")
    held = run_files_in(run_dir)
    if held and not (resume or overwrite):
        raise RunFolderExists(f"{run_dir} holds a run already ({', '.join(held)}); continue it with --resume "
                              f"{run_dir}, or give --overwrite to replace it")


def _check_resume(previous: "TrainConfig", cfg: "TrainConfig", path: Path, more_epochs: bool) -> None:
    """A checkpoint continues only its own configuration (with `more_epochs`, possibly longer)."""
    if not _same_run(previous.to_json(), cfg.to_json(), ("epochs",) if more_epochs else ()):
        raise CheckpointError(f"{path} was written by another configuration; start a new run folder")
    if cfg.epochs < previous.epochs:
        raise CheckpointError(f"{path}: the run has {previous.epochs} epochs; a resume may add epochs, not "
                              f"remove them (got {cfg.epochs})")


def _resume_changes(previous: "TrainConfig", cfg: "TrainConfig") -> dict[str, dict[str, Any]]:
    """What a resume changes: the number of epochs and where the run trains."""
    return {name: {"from": getattr(previous, name), "to": getattr(cfg, name)}
            for name in ("epochs", *RUNTIME_FIELDS) if getattr(previous, name) != getattr(cfg, name)}


def _record_resume(run_dir: Path, epoch: int, changes: dict[str, dict[str, Any]]) -> None:
    path = run_dir / "resumes.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable ({exc}); the file is damaged") from None
    entries.append({"epoch": epoch, "changed": changes})
    _atomic_write(path, lambda fh: fh.write((json.dumps(entries, indent=2) + "\n").encode()))


def _reschedule(optimizer, scheduler, cfg: "TrainConfig", epoch: int) -> None:
    """After a resume that changed the number of epochs: the new total's schedule from `epoch` on."""
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = cfg.epochs
    factor = _lr_lambda(cfg)(epoch)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc_noisy", "train_acc_true", "test_metric", "method_stat", "seconds",
                  "train_acc_peak", *EPOCH_COLUMNS)


def _atomic_write(path: Path, write) -> None:
    """Write `path` through `path.tmp`, renamed over it once complete. When writing fails (a full disk)
    the partial `.tmp` is removed, `path` is left as it was, and the error names `path`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, (OSError, RuntimeError)) or (isinstance(exc, OSError) and exc.filename):
            raise
        # torch.save reports a failed write as a RuntimeError; either way, name the file in one line
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc)
        raise OSError(getattr(exc, "errno", None), f"{why} (writing it failed: the partial {tmp.name} was "
                      f"removed, {path.name} is as it was before)", str(path)) from exc


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


def prepare_data(cfg: TrainConfig, *, stream: bool | None = None):
    """The data set of a configuration and its noisy training labels.

    `stream`: `None` follows `cfg.stream` (`'auto'`: stream an `imagefolder` set whose
    decoded size exceeds a quarter of `available_memory`); `False` reads it into memory
    (callers that need the arrays), `True` streams it."""
    mode = cfg.stream if stream is None else ("yes" if stream else "no")
    extra = ({"image_size": cfg.image_size, "skip_bad_images": cfg.skip_bad_images, "workers": cfg.workers,
              "stream": {"yes": True, "no": False}.get(mode),
              "memory": available_memory(resolve_device(cfg.device)) if mode == "auto" else None}
             if cfg.dataset == "imagefolder" else {})
    data = datasets.load(cfg.dataset, data_dir=cfg.data_dir, task=cfg.task, limit=cfg.limit, **extra)
    if len(data.y_train) == 0:
        raise ValueError(f"{cfg.data_dir or cfg.dataset}: the training set is empty; nothing to train on")
    if len(data.y_test) == 0:
        raise ValueError(f"{cfg.data_dir or cfg.dataset}: the test set is empty (0 rows); nothing to score the run on")
    y_true = data.y_train
    if cfg.task == "regression":
        noisy = noise.regression(y_true, cfg.noise_rate, low=float(y_true.min()), high=float(y_true.max()), seed=cfg.seed) \
            if cfg.noise_rate > 0 else noise.NoisyLabels(y_true.copy(), np.zeros(len(y_true), bool))
    else:
        kind = cfg.noise if (cfg.noise_rate > 0 or cfg.noise == "file") else "none"
        if kind == "file":
            return data, _file_noise(cfg.noise_file, y_true, data.num_classes)
        noisy = noise.apply(kind, y_true, cfg.noise_rate, num_classes=data.num_classes, seed=cfg.seed,
                            path=cfg.noise_file)
    return data, noisy


def _file_noise(path: str | os.PathLike | None, y_true: np.ndarray, num_classes: int) -> noise.NoisyLabels:
    """The noisy labels of `--noise-file`; any error reading it names the file."""
    if path is None:
        raise ValueError("noise 'file' needs a noise file (the noisy labels, .npy or .csv)")
    path = os.fspath(path)
    try:
        if path.lower().endswith(".npy"):
            _check_label_array(path)
        return noise.apply("file", y_true, 0.0, num_classes=num_classes, path=path)
    except (ValueError, TypeError, OverflowError, OSError, EOFError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(text if path in text else f"--noise-file {path}: {text}") from None


def _check_label_array(path: str) -> None:
    """A `.npy` of labels: its header's size must be the file's (checked before the array is read), and
    unsigned labels must fit int64 (a uint64 above 2^63 - 1 would wrap to a negative class)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        need, held = math.prod(shape) * dtype.itemsize, os.fstat(fh.fileno()).st_size - fh.tell()
    if dtype.hasobject or need != held:
        raise ValueError(f"{path}: declares shape {shape} of {dtype} ({need} bytes) but holds {held} bytes; "
                         "not a .npy array of labels")
    if dtype.kind == "u" and dtype.itemsize == 8 and shape and math.prod(shape):
        top = int(np.load(path, allow_pickle=False).max())
        if top > np.iinfo(np.int64).max:
            raise ValueError(f"{path}: label {top} is not a class index (labels are 0..C-1)")


def _first_inputs(data, count: int = 2) -> torch.Tensor:
    """The first `count` training inputs as a batch (decoded, for a streamed set)."""
    k = min(count, len(data.y_train))
    if isinstance(data.x_train, ImageFiles):
        return torch.stack([data.x_train[i] for i in range(k)])
    return torch.from_numpy(np.ascontiguousarray(data.x_train[:k]))


def build_checked_model(cfg: TrainConfig, data, device: torch.device | None = None) -> torch.nn.Module:
    """The run's network on `device`; a user's `package.module:factory` only after one probe forward
    pass on a batch of the training inputs (`probe_model`), so that a
    model of the wrong output size or input shape is refused before the run starts."""
    outputs = 1 if cfg.task == "regression" else data.num_classes
    model = build_model(cfg.model, tuple(data.input_shape), outputs)
    model = model.to(device) if device is not None else model
    if is_factory(cfg.model):
        probe_model(model, cfg.model, _first_inputs(data).to(device or "cpu"), outputs)
    return model


class _Stack:
    """A `DataLoader` collate: the decoded samples stacked, an empty batch (a rank's empty shard) too."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __call__(self, samples):
        return torch.stack(samples) if samples else torch.empty((0, *self.shape))


class _Batches:
    """The batch sampler of a streamed set: the index batches the loop sets for each epoch."""

    def __init__(self, batches=()):
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _stream_loader(files, workers: int, device: torch.device, batches=()):
    """A `DataLoader` decoding `files` by the index batches of a `_Batches` (set per epoch)."""
    from torch.utils.data import DataLoader

    # Its own generator: a DataLoader draws its workers' base seed from the global RNG otherwise, and
    # the streamed run must leave that RNG exactly as the in-memory run does.
    return DataLoader(files, batch_sampler=_Batches(batches), num_workers=workers, collate_fn=_Stack(files.shape[1:]),
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator())


def _evaluate(model, x, y: torch.Tensor, regression: bool, batch_size: int = 1024,
              autocast=nullcontext) -> torch.Tensor:
    """The test set's summed correct predictions (classification) or absolute errors (regression), as a
    float64 tensor on the device: the caller reads it with the epoch's other sums, in one synchronisation.
    `x`: a tensor on the device, or a streamed set's `DataLoader` yielding the same `batch_size` batches."""
    model.eval()
    total = torch.zeros((), dtype=accumulator_dtype(y.device), device=y.device)
    streamed = iter(x) if not torch.is_tensor(x) else None
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = next(streamed).to(y.device, non_blocking=True) if streamed is not None else x[i:i + batch_size]
            with autocast():
                out = model(xb)
            out = out.float()
            if regression:
                total += (out.squeeze(-1) - y[i:i + batch_size]).abs().sum()
            else:
                total += (out.argmax(1) == y[i:i + batch_size]).sum()
    model.train()
    return total


_FLOAT32_MAX = 3.4028234663852886e38


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
#: Types a field takes besides its annotation's, in Python: SuperLoss's threshold as a number, paths.
_ALSO_ALLOWED = {"options.tau": [float], "data_dir": [os.PathLike], "noise_file": [os.PathLike]}


def _type_fits(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return not isinstance(value, bool) and isinstance(value, numbers.Integral if kind is int else numbers.Real)
    return isinstance(value, (list, tuple) if kind is list else kind)


def _allowed(hint) -> tuple[list, bool]:
    """The types a field's annotation allows, and whether `None` is one of them."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else (hint,)
    return [typing.get_origin(a) or a for a in args if a is not type(None)], type(None) in args


def _check_types(obj, cls, prefix: str = "") -> None:
    """Every field of a configuration (`cls`, a dataclass) of its annotated type: a JSON file edited by
    hand can hold `"noise_rate": "0.4"`, which would otherwise fail far from where it was read."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        value = getattr(obj, f.name)
        kinds, nullable = _allowed(hints[f.name])
        kinds += _ALSO_ALLOWED.get(prefix + f.name, [])
        if (value is None and nullable) or any(_type_fits(value, k) for k in kinds):
            continue
        wanted = " or ".join(_TYPE_NAMES.get(k, f"a {k.__name__}") for k in kinds) + (" or null" if nullable else "")
        raise ValueError(f"{prefix}{f.name} must be {wanted}, got {value!r}")


def _check_names(cfg: TrainConfig) -> None:
    from curriculoss.harness.methods import METHODS

    for name, value, allowed in (("dataset", cfg.dataset, datasets.DATASETS), ("task", cfg.task, datasets.TASKS),
                                 ("method", cfg.method, tuple(METHODS)), ("noise", cfg.noise, noise.KINDS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"limit must be a positive integer or null, got {cfg.limit!r}")


def check_config(cfg: TrainConfig) -> None:
    """The optimisation settings of a configuration, before anything is loaded: a NaN, negative or
    overflowing rate would train silently on garbage (`lr=nan` ran to the end with accuracy 0.1) or
    fail deep in the optimizer (`lr=1e300` does not fit the float32 parameters)."""
    _check_types(cfg, TrainConfig)
    _check_types(cfg.options, MethodOptions, "options.")
    _check_names(cfg)
    check_number("noise_rate", cfg.noise_rate, low=0.0, high=1.0)
    check_number("lr", cfg.lr, low=0.0, high=_FLOAT32_MAX, low_open=True)
    check_number("momentum", cfg.momentum, low=0.0, high=1.0, high_open=True)
    check_number("weight_decay", cfg.weight_decay, low=0.0, high=_FLOAT32_MAX)
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_model_name(cfg.model)
    if cfg.augment is not None and cfg.augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}; got {cfg.augment!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {cfg.schedule!r}")
    if isinstance(cfg.warmup, bool) or not isinstance(cfg.warmup, int) or not 0 <= cfg.warmup < cfg.epochs:
        raise ValueError(f"warmup must be an int in [0, epochs) = [0, {cfg.epochs}), got {cfg.warmup!r}")
    if not isinstance(cfg.milestones, (list, tuple)) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in cfg.milestones) \
            or list(cfg.milestones) != sorted(set(cfg.milestones)):
        raise ValueError(f"milestones must be increasing positive epoch numbers, got {cfg.milestones!r}")
    check_number("gamma", cfg.gamma, low=0.0, high=1.0, low_open=True)
    if cfg.amp is not None and cfg.amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16'; got {cfg.amp!r}")
    if isinstance(cfg.image_size, bool) or not isinstance(cfg.image_size, int) or cfg.image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {cfg.image_size!r}")
    if isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int) or cfg.workers < 0:
        raise ValueError(f"workers must be an int >= 0, got {cfg.workers!r}")
    if cfg.stream not in STREAM_MODES:
        raise ValueError(f"stream must be one of {', '.join(STREAM_MODES)}; got {cfg.stream!r}")
    if cfg.stream == "yes" and cfg.dataset != "imagefolder":
        raise ValueError(f"stream 'yes' is for dataset imagefolder; {cfg.dataset} is read into memory")
    if not isinstance(cfg.device, str):
        raise ValueError(f"device must be a string (auto, cpu, cuda, cuda:N, mps), got {cfg.device!r}")


def _init_distributed_from_env(device: torch.device) -> bool:
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


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False, progress: bool = True,
          position: int = 0, stop_on_divergence: bool = False, overwrite: bool = False,
          more_epochs: bool = False) -> dict[str, Any]:
    """Train one model; returns `{'best': ..., 'final': ..., 'metric': 'accuracy'|'mae', ...}`.

    With `run_dir` the run folder is written; with `resume=True` the run continues from its
    `checkpoint.pt` (a missing checkpoint starts from scratch; a corrupt one raises
    `CheckpointError`). Under `torchrun` it trains data-parallel (see the module docstring).
    A new run (`resume=False`) in a folder holding one raises `RunFolderExists`, unless
    `overwrite=True`: the old run's files are then removed once the data and model are ready.
    `more_epochs=True` lets a resume raise `cfg.epochs` above the checkpoint's: the schedule becomes
    the new total's from the resumed epoch on. A resume that changes the epochs or where the run trains
    (`RUNTIME_FIELDS`) is recorded in `resumes.json`.

    A run that collapses (`curriculoss.harness.divergence`: non-finite training loss, or training accuracy
    back at chance after being clearly above it) gets `diverged: True`, `diverged_epoch` and
    `divergence` (what happened) in its results; `stop_on_divergence=True` ends it there
    (`stopped_early: True`, the epochs trained in `epochs_trained`).
    """
    check_config(cfg)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    started = _init_distributed_from_env(resolve_device(cfg.device))
    finished = False
    writer = run_dir is not None and dist_utils.rank() == 0
    try:
        with ExitStack() as held:
            if writer:  # refused at once; checked again under the lock, once the data and the model are ready
                check_not_in_use(run_dir)
                _claim_folder(Path(run_dir), resume, overwrite)

            def claim() -> None:
                # One run per folder (curriculoss.harness.runlock); only the writing rank holds it.
                if writer:
                    held.enter_context(run_folder_lock(run_dir))
                    _claim_folder(Path(run_dir), resume, overwrite)

            results = _train(cfg, run_dir, claim, resume=resume, progress=progress, position=position,
                             stop_on_divergence=stop_on_divergence, overwrite=overwrite, more_epochs=more_epochs)
        finished = True
        return results
    finally:
        if started:
            _end_distributed(finished)


def _end_distributed(finished: bool) -> None:
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


def _train(cfg: TrainConfig, run_dir: str | Path | None, claim, *, resume: bool = False, progress: bool = True,
           position: int = 0, stop_on_divergence: bool = False, overwrite: bool = False,
           more_epochs: bool = False) -> dict[str, Any]:
    world, rank = dist_utils.world_size(), dist_utils.rank()
    distributed = dist_utils.is_distributed()
    writer = rank == 0  # only rank 0 writes the run folder
    run_dir = Path(run_dir) if run_dir is not None else None
    regression = cfg.task == "regression"
    data, noisy = prepare_data(cfg)
    n = len(data.y_train)
    chance = None if regression else chance_accuracy(noisy.labels, data.num_classes)

    dev = resolve_device(cfg.device)
    aug = _default_augment(cfg)
    if aug != "none" and len(data.input_shape) != 3:
        raise ValueError(f"augment {aug!r} needs image inputs (channels, height, width); {cfg.dataset} has "
                         f"input shape {tuple(data.input_shape)} (use augment 'none')")
    # Crop-flip pads with black pixels of the raw image: -mean/std once standardised.
    fill = (None if data.normalisation is None
            else torch.from_numpy(-data.normalisation[0] / data.normalisation[1]).to(dev))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # The one choice of where batches come from: tensors on the device, or (a streamed imagefolder)
    # the files, decoded per batch by a DataLoader in the same seeded order.
    streamed = isinstance(data.x_train, ImageFiles)
    if streamed:
        loader = _stream_loader(data.x_train, cfg.workers, dev)
        n_test = len(data.x_test)
        x_test = _stream_loader(data.x_test, cfg.workers, dev,
                                [list(range(i, min(i + 1024, n_test))) for i in range(0, n_test, 1024)])
    else:
        x_train = torch.from_numpy(data.x_train).to(dev)
        x_test = torch.from_numpy(data.x_test).to(dev)
    target_dtype = torch.float32 if regression else torch.int64
    y_train = torch.from_numpy(np.asarray(noisy.labels)).to(dev, target_dtype)
    y_clean = torch.from_numpy(np.asarray(data.y_train)).to(dev, target_dtype)
    y_test = torch.from_numpy(np.asarray(data.y_test)).to(dev, target_dtype)

    model = build_checked_model(cfg, data, dev)
    method = build_method(cfg.method, cfg.options, None if regression else data.num_classes, n)
    if dev.type == "mps":  # no float64 there: SuperLoss's state in float32 (its docstring says what it costs)
        method = method.float()
    method = method.to(dev)
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
           if distributed else model)
    if cfg.compile:
        net = torch.compile(net)
        if isinstance(getattr(method, "criterion", None), SuperLoss):
            method.criterion.fused = True  # SuperLoss's step as one compiled graph as well
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = _make_scheduler(optimizer, cfg)
    method_optimizer = method.make_optimizer()
    amp_dtype = AMP_DTYPES.get(cfg.amp) if cfg.amp else None
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    scaler = torch.amp.GradScaler(dev.type) if cfg.amp == "fp16" else None

    history: list[dict[str, float]] = []
    start_epoch = 0
    changes: dict[str, dict[str, Any]] = {}

    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if run_dir is not None:
        claim()  # the data and the model are ready: from here on the folder is written
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            if overwrite:
                clear_run_folder(run_dir)
    # The per-sample signals, exactly as a user's own loop records them, streamed into the run folder.
    if writer and run_dir is not None and not (resume and ckpt_path.exists()):
        shutil.rmtree(run_dir / "signals", ignore_errors=True)  # a start from epoch 0 (a new run, or none to resume)
    recorder = Recorder(n, path=None if run_dir is None else run_dir / "signals")
    if run_dir is not None:
        if resume and ckpt_path.exists():
            parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "method": method,
                     "method_optimizer": method_optimizer, "scaler": scaler, "recorder": recorder}
            history, start_epoch, changes = _resume_from(ckpt_path, cfg, more_epochs, parts, dev, n)
        if writer:
            _write_config(run_dir, cfg)
            if changes:
                _record_resume(run_dir, start_epoch, changes)

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    bar = _progress(progress and writer, f"{cfg.method} r={cfg.noise_rate:g} s={cfg.seed}", cfg.epochs,
                    steps_per_epoch, start_epoch, position)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order_host = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        order = order_host.to(dev)
        if streamed:  # this rank's index batches, as the loop below cuts them
            loader.batch_sampler.batches = [
                (dist_utils.shard(b, rank, world) if distributed else b).tolist()
                for b in order_host.split(cfg.batch_size)]
            batches = iter(loader)
        aug_gen = None
        if aug != "none":
            aug_gen = torch.Generator(device=dev).manual_seed(((cfg.seed * 100_003 + epoch) * 1009 + rank) * 2 + 1)
        # Running sums stay tensors: one host synchronisation per epoch, not per step.
        sum_loss, correct_noisy, correct_true = (torch.zeros((), device=dev) for _ in range(3))
        lr = optimizer.param_groups[0]["lr"]
        method.start_epoch()
        window_correct, window_sizes = [], []  # per batch, for the divergence check's quarter-epoch accuracy
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if distributed:
                global_idx, idx = idx, dist_utils.shard(idx, rank, world)
            xb = next(batches).to(dev, non_blocking=True) if streamed else x_train[idx]
            yb = y_train[idx]
            if aug_gen is not None:
                xb = augment_batch(aug, xb, aug_gen, fill=fill)
            with autocast():
                out = net(xb)
            # The method sees float32 outputs: its state (SuperLoss's float64 buffers, the data
            # parameters) and its loss keep their dtype whatever autocast computed the network in.
            out = out.float()
            loss = method(out, yb, idx)
            if distributed:
                # Rank r's mean times K n_r / n: DDP's (and SparseSGD's) average is the global batch mean.
                loss = loss * (world * len(idx) / len(global_idx)) if len(idx) else out.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            if method_optimizer is not None:
                method_optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                if method_optimizer is not None:
                    scaler.step(method_optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
                if method_optimizer is not None:
                    method_optimizer.step()
            with torch.no_grad():
                recorder.update(idx, out, yb, confidence=method.confidence, loss=method.per_sample_loss)
                sum_loss += method.per_sample_loss.sum()
                pred = out.squeeze(-1).round() if regression else out.argmax(1)
                batch_correct = (pred == yb).sum()
                correct_noisy += batch_correct
                window_correct.append(batch_correct)
                window_sizes.append(len(global_idx) if distributed else len(idx))
                correct_true += (pred == y_clean[idx]).sum()
            bar.update(1)
        scheduler.step()
        recorder.end_epoch()  # distributed: gathers every rank's shard
        if distributed:
            sums = dist_utils.all_reduce_sum(torch.stack([sum_loss.double(), correct_noisy.double(), correct_true.double()]))
            sum_loss, correct_noisy, correct_true = sums.unbind()
            # summary() reads the last batch's signals: give it the global batch's, as one process has them.
            method.per_sample_loss = recorder.last("loss").to(dev)[global_idx]
            if method.confidence is not None:
                method.confidence = recorder.last("confidence").to(dev)[global_idx]
        test_sum = _evaluate(model, x_test, y_test, regression, autocast=autocast)
        # The epoch's one wait for the device: all its numbers in one transfer.
        sums = torch.stack([sum_loss.double(), correct_noisy.double(), correct_true.double(), test_sum]).tolist()
        stat = method.summary()
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": sums[0] / n, "train_acc_noisy": sums[1] / n,
            "train_acc_true": sums[2] / n, "test_metric": sums[3] / max(len(data.y_test), 1),
            "method_stat": float("nan") if stat is None else stat, "seconds": time.perf_counter() - t0,
            **_window_columns(window_correct, window_sizes, distributed),
            **_epoch_columns(method, distributed),
        }
        history.append(row)
        bar.end_epoch(row)
        if run_dir is not None and writer:
            state = {
                "config": cfg.to_json(), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(),
                "method_optimizer": method_optimizer.state_dict() if method_optimizer is not None else None,
                "history": history, "recorder": recorder.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        **({"cuda": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {})},
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            }
            # CPU tensors only: the checkpoint loads on any machine, with or without the device.
            state = _to_cpu(state)
            _atomic_write(ckpt_path, lambda fh: torch.save(state, fh))
            _write_metrics(run_dir, history)
        if stop_on_divergence and find_divergence(history, chance)[0] is not None:
            break
    bar.close()

    metric = "mae" if regression else "accuracy"
    tests = [r["test_metric"] for r in history]
    best = min(tests) if regression else max(tests)
    results = {"metric": metric, "best": best, "final": tests[-1], "epochs": cfg.epochs,
               "realised_noise_rate": float(noisy.rate), "seconds": sum(r["seconds"] for r in history),
               **_divergence_results(history, chance, cfg.epochs)}
    if run_dir is not None and writer:
        recorder.save(labels=np.asarray(noisy.labels), true_labels=np.asarray(data.y_train),
                      noise_mask=np.asarray(noisy.mask))
        (run_dir / "signals.npz").unlink(missing_ok=True)  # a resumed run of an older version: its tables moved on
        _atomic_write(run_dir / "results.json", lambda fh: fh.write((json.dumps(results, indent=2) + "\n").encode()))
        _plot_curves(run_dir, history, metric)
    return results


def _write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """`args.json` (the configuration) and `config.toml` (the same, as options of `curriculoss train
    --config`)."""
    _atomic_write(run_dir / "args.json", lambda fh: fh.write((json.dumps(cfg.to_json(), indent=2) + "\n").encode()))
    _atomic_write(run_dir / "config.toml", lambda fh: fh.write(toml_text(cfg).encode()))


#: What a checkpoint holds (`recorder`, or before it `loss_signal` and `conf_signal`, besides).
_CHECKPOINT_FIELDS = ("config", "epoch", "model", "optimizer", "scheduler", "method", "history", "rng")


def _checked_checkpoint(state: dict[str, Any], path: Path) -> TrainConfig:
    """The configuration of a checkpoint whose fields are all there and agree with each other (its history
    holds the metrics of its epochs at least)."""
    missing = [k for k in _CHECKPOINT_FIELDS if k not in state]
    if "recorder" not in state and not {"loss_signal", "conf_signal"} <= state.keys():
        missing.append("recorder")
    if missing:
        raise CheckpointError(f"{path}: missing field(s) {', '.join(missing)}; not a complete curriculoss "
                              "checkpoint (delete it to restart the run from scratch)")
    try:
        previous = TrainConfig.from_json(state["config"])
        check_config(previous)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: field config is not a valid configuration ({exc})") from None
    epoch, history = state["epoch"], state["history"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= previous.epochs:
        raise CheckpointError(f"{path}: field epoch is {epoch!r}; expected an integer in [1, {previous.epochs}] "
                              "(the epochs of its run): the checkpoint is damaged or was edited")
    if not isinstance(history, list) or len(history) < epoch:
        held = f"{len(history)} epochs" if isinstance(history, list) else f"a {type(history).__name__}"
        raise CheckpointError(f"{path}: field history holds {held}, field epoch says {epoch}: the checkpoint is "
                              "damaged or was edited")
    return previous


def _resume_from(path: Path, cfg: TrainConfig, more_epochs: bool, parts: dict[str, Any], dev: torch.device,
                 n: int) -> tuple[list, int, dict[str, dict[str, Any]]]:
    """Restore `parts` (model, optimizers, method, ...) from the checkpoint at `path`: the history so
    far, the epoch to start from and what the resume changes."""
    state = load_checkpoint(path)
    previous = _checked_checkpoint(state, path)
    _check_resume(previous, cfg, path, more_epochs)
    try:
        _restore(state, parts, dev, n)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot restore the run from it ({_one_line(exc)}); the checkpoint is "
                              "damaged or was edited (delete it to restart the run from scratch)") from None
    if cfg.epochs != previous.epochs:
        _reschedule(parts["optimizer"], parts["scheduler"], cfg, state["epoch"])
    return list(state["history"][:state["epoch"]]), state["epoch"], _resume_changes(previous, cfg)


def _restore(state: dict[str, Any], parts: dict[str, Any], dev: torch.device, n: int) -> None:
    for name in ("model", "optimizer", "scheduler", "method"):
        parts[name].load_state_dict(state[name])
    if parts["method_optimizer"] is not None:
        parts["method_optimizer"].load_state_dict(state["method_optimizer"])
    if parts["scaler"] is not None and state.get("scaler"):
        parts["scaler"].load_state_dict(state["scaler"])
    parts["recorder"].load_state_dict(_recorder_state(state, n))
    torch.set_rng_state(state["rng"]["torch"])
    if dev.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], dev)


#: Configuration fields that are not command-line options (the method options are written one by one).
_NOT_OPTIONS = ("momentum", "options")


def _cli_options(cfg: TrainConfig) -> dict:
    """The command-line options of a run's configuration, by long option name; `None` values left out."""
    out = {f.name.replace("_", "-"): getattr(cfg, f.name) for f in fields(cfg) if f.name not in _NOT_OPTIONS}
    opts = cfg.options
    out.update({name.replace("_", "-"): getattr(opts, name) for name in (f.name for f in fields(opts))
                if name not in ("smoothing", "sl_normalise")})
    out["no-smoothing"] = opts.smoothing is None
    out["sl-step"] = "normalised" if opts.sl_normalise else "paper"
    if not out["milestones"]:
        out["milestones"] = None
    return {k: v for k, v in out.items() if v is not None}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)  # TOML's forms: 3, 0.0005, 1e-05, inf, nan
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                      else f"\\U{ord(c):08x}" for c in str(value))
    return f'"{escaped}"'


def toml_text(cfg: TrainConfig) -> str:
    """The configuration `cfg` as the TOML options of `curriculoss train --config`: every option with
    its resolved value (one left at `None`, such as the `data-dir` of the built-in digits, is left out)."""
    lines = ["# The options of this run: `curriculoss train --config config.toml --out NEW` trains it again.",
             "# args.json holds the same configuration."]
    if cfg.momentum != 0.9 or cfg.options.smoothing not in (None, 0.9):
        lines.append(f"# Not command-line options: momentum {cfg.momentum}, smoothing {cfg.options.smoothing} "
                     "(see args.json).")
    lines += [f"{key} = {_toml_value(value)}" for key, value in _cli_options(cfg).items()]
    return "\n".join(lines) + "\n"


def stderr_is_terminal() -> bool:
    """Whether progress (written to stderr) reaches a terminal, where a redrawn bar belongs."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class _Silent:
    """No progress (`progress=False`, or a rank that does not write)."""

    def update(self, steps: int = 1) -> None:
        pass

    def end_epoch(self, row: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class _EpochLines(_Silent):
    """Progress into a file or a pipe: one plain line per epoch, no carriage return or escape code."""

    def __init__(self, desc: str, epochs: int):
        self.desc, self.epochs = desc, epochs

    def end_epoch(self, row: dict[str, float]) -> None:
        print(f"{self.desc} epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}, train acc "
              f"{row['train_acc_noisy']:.4f}, test {row['test_metric']:.4f}, {row['seconds']:.1f} s",
              file=sys.stderr, flush=True)


class _Bar(_Silent):
    """A tqdm bar on a terminal, one step per batch, the last test metric in its postfix."""

    def __init__(self, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(**kwargs)

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def end_epoch(self, row: dict[str, float]) -> None:
        self.bar.set_postfix(test=f"{row['test_metric']:.4f}")

    def close(self) -> None:
        self.bar.close()


def _progress(enabled: bool, desc: str, epochs: int, steps: int, start: int, position: int) -> _Silent:
    if not enabled:
        return _Silent()
    if not stderr_is_terminal():
        return _EpochLines(desc, epochs)
    return _Bar(total=epochs * steps, initial=start * steps, desc=desc, position=position, leave=False,
                dynamic_ncols=True)


def _window_columns(correct: list, sizes: list[int], distributed: bool) -> dict[str, float]:
    """Best quarter-epoch training accuracy (noisy labels), for the divergence check."""
    if correct:  # one host transfer per epoch
        stacked = torch.stack(correct).double()
        correct = (dist_utils.all_reduce_sum(stacked) if distributed else stacked).tolist()
    return {"train_acc_peak": window_accuracies(correct, sizes)[0]}


def _divergence_results(history: list[dict[str, float]], chance: float | None, epochs: int) -> dict[str, Any]:
    epoch, reason = find_divergence(history, chance, complete=len(history) == epochs)
    out: dict[str, Any] = {"diverged": epoch is not None, "diverged_epoch": epoch}
    if epoch is not None:
        out["divergence"] = f"{reason}; {ADVICE}"
    if len(history) < epochs:
        out.update(stopped_early=True, epochs_trained=len(history))
    return out


def _epoch_columns(method, distributed: bool) -> dict[str, float]:
    """The method's extra metrics of the epoch (e.g. SuperLoss's share at the cap), over every rank."""
    sums = method.epoch_sums()
    if distributed and sums is not None:
        sums = dist_utils.all_reduce_sum(sums)
    return method.epoch_columns(sums)


def _recorder_state(state: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    """The recorder's state of a checkpoint; one written before the recorder (`loss_signal` and
    `conf_signal`, `(epochs, N)` with NaN rows ahead) gives its finished epochs and no margins."""
    if "recorder" in state:
        return state["recorder"]
    done = state["epoch"]
    loss, conf = state["loss_signal"][:done], state["conf_signal"][:done]
    return {"loss": loss, "confidence": conf, "margin": torch.full_like(loss, float("nan")),
            "labels": torch.full((n,), -1, dtype=torch.int64), "predicted": torch.full((n,), -1, dtype=torch.int64)}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a damaged file raises `CheckpointError`."""
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
