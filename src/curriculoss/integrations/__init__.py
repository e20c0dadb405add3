"""Callbacks that bring the library into the training loops of other frameworks.

- `lightning`: Lightning callbacks (`pip install "curriculoss[lightning]"`):
  `RecorderCallback` records the per-sample signals that `curriculoss flag` ranks, from what
  `training_step` returns; `DataParametersCallback` steps the data parameters' own optimizer
  next to the model's.
- `transformers`: the same two for the Hugging Face `Trainer`
  (`pip install "curriculoss[huggingface]"`).

Neither framework is imported by `import curriculoss` or by this package: only importing one of
the two modules imports its framework, and says which extra to install when it is missing. The
modules build on the library (`Recorder`, `DataParameters`)
and never import `harness`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from curriculoss.data_parameters import DataParameters, SparseSGD
from curriculoss.recorder import Recorder

__all__: list[str] = []

def _require(modules: tuple[str, ...], extra: str, what: str) -> Any:
    """The first of `modules` that imports, or an ImportError that names the extra to install."""
    for module in modules:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            error = exc
    raise ImportError(f"{what} needs {modules[0].split('.')[0]}, which is not installed: "
                      f'pip install "curriculoss[{extra}]"') from error


def _noise_mask(noise_mask, num_samples: int) -> np.ndarray | None:
    """The callbacks' `noise_mask` argument as a bool array of one entry per sample (or `None`)."""
    if noise_mask is None:
        return None
    mask = np.asarray(noise_mask, dtype=bool)
    if mask.shape != (num_samples,):
        raise ValueError(f"noise_mask must have shape ({num_samples},), got {mask.shape}")
    return mask


def _check_data_parameters(data_parameters) -> DataParameters:
    """The callbacks' `data_parameters` argument, checked."""
    if not isinstance(data_parameters, DataParameters):
        raise TypeError(f"data_parameters must be a curriculoss.DataParameters, got {type(data_parameters).__name__}")
    return data_parameters


class _DataParametersStep:
    """What both frameworks' `DataParametersCallback` do: make the data parameters' own optimizer once,
    load its saved state once the parameters are on their device, and step it after the backward passes
    (through the framework's `GradScaler` when there is one), then zero the gradients."""

    def __init__(self, data_parameters: DataParameters, **optimizer_kwargs):
        self.data_parameters = _check_data_parameters(data_parameters)
        self.optimizer_kwargs = optimizer_kwargs
        self.optimizer: SparseSGD | None = None
        self._loaded: dict | None = None

    def _make_optimizer(self) -> None:
        if self.optimizer is None:
            self.optimizer = self.data_parameters.optimizer(**self.optimizer_kwargs)

    def _load_saved(self) -> None:
        if self._loaded is not None:
            self.optimizer.load_state_dict(self._loaded)
            self._loaded = None

    def _step(self, scaler) -> None:
        if not any(p.grad is not None for p in self.data_parameters.data_parameters()):
            return  # no backward since the last step (a skipped batch, or a second optimizer)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
            scaler.step(self.optimizer)  # the framework's scaler.update() follows the model's step
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _recorder(num_samples: int, path: str | Path | None, stream: bool) -> Recorder:
    """The callbacks' recorder: in memory, or (`stream`) streaming into `path/signals`."""
    if stream and path is None:
        raise ValueError("path is needed with stream=True: the folder whose signals/ the epochs stream into")
    return Recorder(num_samples, path=Path(path) / "signals" if stream else None)


def _save(recorder: Recorder, path: str | Path, noise_mask: np.ndarray | None, extra: dict[str, Any]) -> Path:
    """Write the closed epochs to `path` (a `.npz` file, or a folder for `signals.npz`), or for a streaming
    recorder the labels and extras into its signals folder; returns the file or the folder."""
    if recorder.path is not None:
        recorder.save(noise_mask=noise_mask, **extra)
        return recorder.path
    path = Path(path)
    if path.suffix != ".npz":
        path = path / "signals.npz"
    recorder.save(path, noise_mask=noise_mask, **extra)
    return path
