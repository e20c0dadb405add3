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

from curriculoss.data_parameters import DataParameters
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
