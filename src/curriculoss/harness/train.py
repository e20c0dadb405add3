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
    results.json   best and final test metric (written when the run ends); with a hold-out split, the test
                   metric of the epoch it selects ('selected', `curriculoss.harness.holdout`)
    holdout_index.npy  the held-out positions in the training set (with `holdout` > 0 only)
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
on the test set (and the hold-out split), and only rank 0 writes the run folder; every rank resumes
from the same checkpoint, so a resumed run ends as an uninterrupted one. Outside `torchrun`
(`WORLD_SIZE` unset or 1) nothing of this happens. Models with BatchNorm (`resnet`) keep per-rank batch
statistics under DDP, so they do not reproduce the single-process run exactly.

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

import json
import math
import os
import random
import shutil
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curriculoss import distributed as dist_utils
from curriculoss import noise
from curriculoss.harness import data as datasets
from curriculoss.harness import plots
from curriculoss.harness.checkpoint import (CheckpointError, checkpoint_state, load_checkpoint, open_checkpoint,
                                            record_resume, resume_from)
from curriculoss.harness.config import (AMP_DTYPES, RUNTIME_FIELDS, TrainConfig, check_config, default_augment,
                                        same_run, toml_text)
from curriculoss.harness.data.imagefolder import ImageFiles
from curriculoss.harness.devices import available_memory, end_distributed, init_distributed_from_env, resolve_device
from curriculoss.harness.divergence import ADVICE, find_divergence
from curriculoss.harness.epoch import Run, evaluate_epoch, stream_loader, train_one_epoch
from curriculoss.harness.holdout import selected_epoch, split_holdout, write_holdout_index
from curriculoss.harness.methods import build_method
from curriculoss.harness.models import build_model, is_factory, probe_model
from curriculoss.harness.progress import progress_bar
from curriculoss.harness.runfolder import (RUN_FILES, RunFolderExists, atomic_write, claim_folder, clear_run_folder,
                                           run_files_in, write_config, write_json)
from curriculoss.harness.runfolder import write_metrics as _write_metrics  # looked up here at each epoch
from curriculoss.harness.runlock import check_not_in_use, run_folder_lock
from curriculoss.harness.schedule import make_scheduler
from curriculoss.recorder import Recorder
from curriculoss.superloss import SuperLoss

__all__ = ["TrainConfig", "train", "prepare_data", "load_checkpoint", "CheckpointError", "RunFolderExists",
           "check_config", "resolve_device", "build_checked_model", "toml_text", "RUNTIME_FIELDS", "RUN_FILES",
           "run_files_in", "clear_run_folder", "available_memory", "train_or_reuse"]

#: The name under which `curriculoss flag` reads a streamed set's batches.
_stream_loader = stream_loader


def prepare_data(cfg: TrainConfig, *, stream: bool | None = None):
    """The data set of a configuration and its noisy training labels, on the whole training set (a run
    with `cfg.holdout` splits them then: `curriculoss.harness.holdout.split_holdout`).

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

    With `cfg.holdout > 0` the results also hold `selected` (the test metric of the epoch a noisy
    hold-out split selects), `selected_epoch`, `holdout` and `holdout_size`
    (`curriculoss.harness.holdout`).
    """
    check_config(cfg)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    started = init_distributed_from_env(resolve_device(cfg.device))
    finished = False
    writer = run_dir is not None and dist_utils.rank() == 0
    try:
        with ExitStack() as held:
            if writer:  # refused at once; checked again under the lock, once the data and the model are ready
                check_not_in_use(run_dir)
                claim_folder(Path(run_dir), resume, overwrite)

            def claim() -> None:
                # One run per folder (curriculoss.harness.runlock); only the writing rank holds it.
                if writer:
                    held.enter_context(run_folder_lock(run_dir))
                    claim_folder(Path(run_dir), resume, overwrite)

            results = _train(cfg, run_dir, claim, resume=resume, progress=progress, position=position,
                             stop_on_divergence=stop_on_divergence, overwrite=overwrite, more_epochs=more_epochs)
        finished = True
        return results
    finally:
        if started:
            end_distributed(finished)


def train_or_reuse(cfg: TrainConfig, folder: str | Path, *, stamp: str | None = None, trainer=None,
                   **kwargs) -> dict[str, Any]:
    """The results of the run folder `folder` trained with `cfg`: read back when the run there has finished,
    else trained by `trainer` (default `train`; an interrupted run resumes from its checkpoint), given
    `kwargs`.

    A finished run must be of `cfg`: with `stamp`, the file of that name, written with `cfg` before the
    run starts, must hold exactly `cfg` (a preset's cell, whose hyper-parameters are selected; a field the
    stamp predates counts as its default); else the run's `args.json` must be the same run
    (`RUNTIME_FIELDS` aside: a grid's cell). Another configuration raises `ValueError`.
    """
    folder = Path(folder)
    done = folder / "results.json"
    if done.exists():
        if not _finished_with(folder, cfg, stamp):
            why = "(other hyper-parameters?); give another --out" if stamp else \
                "(or none readable); give another --out, or --overwrite"
            raise ValueError(f"{folder} holds a finished run of another configuration {why}")
        return json.loads(done.read_text())
    if stamp:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / stamp).write_text(json.dumps(cfg.to_json(), indent=1))
    return (trainer or train)(cfg, folder, resume=True, **kwargs)


def _finished_with(folder: Path, cfg: TrainConfig, stamp: str | None) -> bool:
    if stamp:
        path = folder / stamp
        if not path.exists():
            return False
        recorded = json.loads(path.read_text())
        # read as args.json is read: a field the stamp predates (such as `holdout`) holds its default
        return isinstance(recorded, dict) and (json.dumps(TrainConfig.from_json(recorded).to_json(), sort_keys=True)
                                               == json.dumps(cfg.to_json(), sort_keys=True))
    try:
        recorded = json.loads((folder / "args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and same_run(TrainConfig.from_json(recorded).to_json(), cfg.to_json())


def _train(cfg: TrainConfig, run_dir: str | Path | None, claim, *, resume: bool = False, progress: bool = True,
           position: int = 0, stop_on_divergence: bool = False, overwrite: bool = False,
           more_epochs: bool = False) -> dict[str, Any]:
    """The training loop: set-up, restore, then per epoch one epoch of training, evaluation and a
    checkpoint, and the run's end."""
    run = _set_up(cfg)
    run_dir = Path(run_dir) if run_dir is not None else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    if run_dir is not None:
        history, start_epoch = _open_run_folder(run, run_dir, claim, resume, overwrite, more_epochs)
    bar = progress_bar(progress and run.writer, f"{cfg.method} r={cfg.noise_rate:g} s={cfg.seed}", cfg.epochs,
                       math.ceil(run.n / cfg.batch_size), start_epoch, position)
    for epoch in range(start_epoch, cfg.epochs):
        sums = train_one_epoch(run, epoch, bar)
        row = evaluate_epoch(run, epoch, sums)
        history.append(row)
        bar.end_epoch(row)
        if run_dir is not None and run.writer:
            _save_checkpoint(run, run_dir, epoch + 1, history)
        if stop_on_divergence and find_divergence(history, run.chance)[0] is not None:
            break
    bar.close()
    return _finish(run, run_dir, history)


def _set_up(cfg: TrainConfig) -> Run:
    """The run's data on its device, its model, method and optimizers, seeded by `cfg.seed`."""
    data, noisy = prepare_data(cfg)
    held = None
    if cfg.holdout > 0:  # the noise is drawn on the whole training set, then the split is made
        data, noisy, held = split_holdout(cfg, data, noisy)
    dev = resolve_device(cfg.device)
    aug = default_augment(cfg)
    if aug != "none" and len(data.input_shape) != 3:
        raise ValueError(f"augment {aug!r} needs image inputs (channels, height, width); {cfg.dataset} has "
                         f"input shape {tuple(data.input_shape)} (use augment 'none')")
    # Crop-flip pads with black pixels of the raw image: -mean/std once standardised.
    fill = (None if data.normalisation is None
            else torch.from_numpy(-data.normalisation[0] / data.normalisation[1]).to(dev))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    inputs = _inputs(cfg, data, noisy, dev)
    parts = _trainable(cfg, data, dev)
    n = len(data.y_train)
    recorder = Recorder(n)  # the per-sample signals, as a user's own loop records them (streamed: _open_run_folder)
    return Run(cfg=cfg, dev=dev, data=data, noisy=noisy, aug=aug, fill=fill, recorder=recorder, **inputs, **parts,
               holdout=None if held is None else held.to(dev, cfg.task == "regression"))


def _inputs(cfg: TrainConfig, data, noisy, dev: torch.device) -> dict[str, Any]:
    """Where batches come from: tensors on the device, or (a streamed imagefolder) the files, decoded per
    batch by a `DataLoader` in the same seeded order; and the targets on the device."""
    x_train = loader = None
    if isinstance(data.x_train, ImageFiles):
        loader = stream_loader(data.x_train, cfg.workers, dev)
        n_test = len(data.x_test)
        x_test = stream_loader(data.x_test, cfg.workers, dev,
                               [list(range(i, min(i + 1024, n_test))) for i in range(0, n_test, 1024)])
    else:
        x_train = torch.from_numpy(data.x_train).to(dev)
        x_test = torch.from_numpy(data.x_test).to(dev)
    target_dtype = torch.float32 if cfg.task == "regression" else torch.int64
    y_train = torch.from_numpy(np.asarray(noisy.labels)).to(dev, target_dtype)
    y_clean = torch.from_numpy(np.asarray(data.y_train)).to(dev, target_dtype)
    y_test = torch.from_numpy(np.asarray(data.y_test)).to(dev, target_dtype)
    return {"x_train": x_train, "loader": loader, "x_test": x_test, "y_train": y_train, "y_clean": y_clean,
            "y_test": y_test}


def _trainable(cfg: TrainConfig, data, dev: torch.device) -> dict[str, Any]:
    """The model (as trained: under DDP and `torch.compile` where asked), the method, their optimizers,
    the schedule and the mixed-precision context."""
    model = build_checked_model(cfg, data, dev)
    regression = cfg.task == "regression"
    method = build_method(cfg.method, cfg.options, None if regression else data.num_classes, len(data.y_train))
    if dev.type == "mps":  # no float64 there: SuperLoss's state in float32 (its docstring says what it costs)
        method = method.float()
    method = method.to(dev)
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
           if dist_utils.is_distributed() else model)
    if cfg.compile:
        net = torch.compile(net)
        if isinstance(getattr(method, "criterion", None), SuperLoss):
            method.criterion.fused = True  # SuperLoss's step as one compiled graph as well
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    amp_dtype = AMP_DTYPES.get(cfg.amp) if cfg.amp else None
    return {"model": model, "net": net, "method": method, "optimizer": optimizer,
            "scheduler": make_scheduler(optimizer, cfg), "method_optimizer": method.make_optimizer(),
            "autocast": (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext,
            "scaler": torch.amp.GradScaler(dev.type) if cfg.amp == "fp16" else None}


def _open_run_folder(run: Run, run_dir: Path, claim, resume: bool, overwrite: bool,
                     more_epochs: bool) -> tuple[list[dict[str, float]], int]:
    """Claim the folder (the data and the model are ready: from here on it is written) and restore a
    resumed run; the history so far and the epoch to start from."""
    history, start_epoch, changes = [], 0, {}
    claim()
    if run.writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            clear_run_folder(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    checkpoint = open_checkpoint(ckpt_path, run.cfg, more_epochs) if resume and ckpt_path.exists() else None
    if run.writer and checkpoint is None:
        shutil.rmtree(run_dir / "signals", ignore_errors=True)  # a start from epoch 0 (a new run, or none to resume)
    run.recorder = Recorder(run.recorder.num_samples, path=run_dir / "signals")  # streamed into the run folder
    if checkpoint is not None:
        history, start_epoch, changes = resume_from(ckpt_path, checkpoint, run)
    if run.writer:
        write_config(run_dir, run.cfg)
        if run.holdout is not None:
            write_holdout_index(run_dir, run.holdout)
        if changes:
            record_resume(run_dir, start_epoch, changes)
    return history, start_epoch


def _save_checkpoint(run: Run, run_dir: Path, epoch: int, history: list[dict[str, float]]) -> None:
    """The checkpoint after `epoch` (1-based), written atomically, and the metrics so far."""
    state = checkpoint_state(run, epoch, history)
    atomic_write(run_dir / "checkpoint.pt", lambda fh: torch.save(state, fh))
    _write_metrics(run_dir, history)


def _finish(run: Run, run_dir: Path | None, history: list[dict[str, float]]) -> dict[str, Any]:
    """The run's results; with a run folder, its signals, results and learning curves written."""
    cfg, data, noisy, recorder = run.cfg, run.data, run.noisy, run.recorder
    metric = "mae" if run.regression else "accuracy"
    tests = [r["test_metric"] for r in history]
    best = min(tests) if run.regression else max(tests)
    results = {"metric": metric, "best": best, "final": tests[-1], "epochs": cfg.epochs,
               "realised_noise_rate": float(noisy.rate), "seconds": sum(r["seconds"] for r in history),
               **_divergence_results(history, run.chance, cfg.epochs)}
    if run.holdout is not None:  # beside 'final', never instead
        results.update(selected_epoch(history, run.holdout, run.regression))
    if run_dir is not None and run.writer:
        recorder.save(labels=np.asarray(noisy.labels), true_labels=np.asarray(data.y_train),
                      noise_mask=np.asarray(noisy.mask))
        (run_dir / "signals.npz").unlink(missing_ok=True)  # a resumed run of an older version: its tables moved on
        write_json(run_dir / "results.json", results)
        plots.save_figure(run_dir / "curves.png", plots.training_curves, history, metric)
    return results


def _divergence_results(history: list[dict[str, float]], chance: float | None, epochs: int) -> dict[str, Any]:
    epoch, reason = find_divergence(history, chance, complete=len(history) == epochs)
    out: dict[str, Any] = {"diverged": epoch is not None, "diverged_epoch": epoch}
    if epoch is not None:
        out["divergence"] = f"{reason}; {ADVICE}"
    if len(history) < epochs:
        out.update(stopped_early=True, epochs_trained=len(history))
    return out
