"""A run's checkpoint: what it holds, how it is written, read, checked and restored.

A checkpoint holds CPU tensors only (it loads on any machine), every RNG state, the model, the
optimizer(s), the method's state, the metrics so far and the per-sample signals; it is read with
`weights_only=True`. A resume continues the checkpoint's own configuration (`check_resume`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from curriculoss.harness.config import RUNTIME_FIELDS, TrainConfig, check_config, same_run
from curriculoss.harness.models import one_line
from curriculoss.harness.runfolder import write_json
from curriculoss.harness.schedule import reschedule

if TYPE_CHECKING:
    from curriculoss.harness.epoch import Run

__all__ = ["CheckpointError", "load_checkpoint", "checkpoint_state", "open_checkpoint", "resume_from",
           "record_resume"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated or from another configuration)."""


def _to_cpu(obj):
    """`obj` with every tensor moved to the CPU (a checkpoint must load on a machine without the GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _check_resume(previous: TrainConfig, cfg: TrainConfig, path: Path, more_epochs: bool) -> None:
    """A checkpoint continues only its own configuration (with `more_epochs`, possibly longer)."""
    if not same_run(previous.to_json(), cfg.to_json(), ("epochs",) if more_epochs else ()):
        raise CheckpointError(f"{path} was written by another configuration; start a new run folder")
    if cfg.epochs < previous.epochs:
        raise CheckpointError(f"{path}: the run has {previous.epochs} epochs; a resume may add epochs, not "
                              f"remove them (got {cfg.epochs})")


def _resume_changes(previous: TrainConfig, cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """What a resume changes: the number of epochs and where the run trains."""
    return {name: {"from": getattr(previous, name), "to": getattr(cfg, name)}
            for name in ("epochs", *RUNTIME_FIELDS) if getattr(previous, name) != getattr(cfg, name)}


def record_resume(run_dir: Path, epoch: int, changes: dict[str, dict[str, Any]]) -> None:
    """Add what a resume changed (`changes`), and at which epoch, to the run's `resumes.json`."""
    path = run_dir / "resumes.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable ({exc}); the file is damaged") from None
    entries.append({"epoch": epoch, "changed": changes})
    write_json(path, entries)


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


def open_checkpoint(path: Path, cfg: TrainConfig, more_epochs: bool) -> tuple[dict[str, Any], TrainConfig]:
    """The checkpoint at `path` and the configuration that wrote it, refused unless `cfg` continues that
    run (read before anything of the run folder is opened: a run of another size would otherwise fail on
    the shape of its signals)."""
    state = load_checkpoint(path)
    previous = _checked_checkpoint(state, path)
    _check_resume(previous, cfg, path, more_epochs)
    return state, previous


def resume_from(path: Path, checkpoint: tuple[dict[str, Any], TrainConfig],
                run: Run) -> tuple[list, int, dict[str, dict[str, Any]]]:
    """Restore the parts of `run` (model, optimizers, method, recorder, RNG states) from `checkpoint`
    (`open_checkpoint` of `path`): the history so far, the epoch to start from and what the resume changes."""
    state, previous = checkpoint
    cfg = run.cfg
    try:
        _restore(state, run)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot restore the run from it ({one_line(exc)}); the checkpoint is "
                              "damaged or was edited (delete it to restart the run from scratch)") from None
    if cfg.epochs != previous.epochs:
        reschedule(run.optimizer, run.scheduler, cfg, state["epoch"])
    return list(state["history"][:state["epoch"]]), state["epoch"], _resume_changes(previous, cfg)


def _restore(state: dict[str, Any], run: Run) -> None:
    for name in ("model", "optimizer", "scheduler", "method"):
        getattr(run, name).load_state_dict(state[name])
    if run.method_optimizer is not None:
        run.method_optimizer.load_state_dict(state["method_optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.recorder.load_state_dict(_recorder_state(state, run.n))
    torch.set_rng_state(state["rng"]["torch"])
    if run.dev.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], run.dev)


def checkpoint_state(run: Run, epoch: int, history: list[dict[str, float]]) -> dict[str, Any]:
    """What the checkpoint after `epoch` (1-based) holds, as CPU tensors: it loads on any machine, with or
    without the device."""
    cfg, dev, recorder = run.cfg, run.dev, run.recorder
    state = {
        "config": cfg.to_json(), "epoch": epoch, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "method": run.method.state_dict(),
        "method_optimizer": run.method_optimizer.state_dict() if run.method_optimizer is not None else None,
        "history": history, "recorder": recorder.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {})},
        **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
    }
    return _to_cpu(state)


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
