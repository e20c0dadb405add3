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


class _Recording:
    """What both frameworks' `RecorderCallback` hold: the recorder (in memory, or streaming into
    `path/signals`), the noise mask and extras it saves with the signals, and where they went."""

    def __init__(self, num_samples: int, path: str | Path | None = None, *, noise_mask=None,
                 extra: dict[str, Any] | None = None, stream: bool = False):
        if stream and path is None:
            raise ValueError("path is needed with stream=True: the folder whose signals/ the epochs stream into")
        self.recorder = Recorder(num_samples, path=Path(path) / "signals" if stream else None)
        self.path = None if path is None else Path(path)
        self.noise_mask = _noise_mask(noise_mask, self.recorder.num_samples)
        self.extra = dict(extra or {})
        self.saved_path: Path | None = None

    def save(self, path: str | Path) -> Path:
        """Write the closed epochs to `path` (a `.npz` file, or a folder for `signals.npz`), with
        `noise_mask` and `extra`; a streaming recorder writes the labels and extras into its signals
        folder instead. Returns the file or the folder."""
        if self.recorder.path is not None:
            self.recorder.save(noise_mask=self.noise_mask, **self.extra)
            return self.recorder.path
        path = Path(path)
        if path.suffix != ".npz":
            path = path / "signals.npz"
        self.recorder.save(path, noise_mask=self.noise_mask, **self.extra)
        return path
