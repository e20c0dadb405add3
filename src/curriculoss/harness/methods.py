"""The training methods the command line knows, by name.

A method turns the model's output, the (noisy) targets and the samples' dataset indices into the loss
to minimise, and exposes per-sample signals of the last batch:

- `per_sample_loss`: the task loss of each sample (before any weighting), detached;
- `confidence`: the method's per-sample confidence (SuperLoss sigma*, instance data parameter,
  IMAE weight), or `None`;
- `summary()`: one number per epoch for the metrics (tau, mean data parameter), or `None`;
- `epoch_sums()` / `epoch_columns(sums)`: running per-epoch sums, kept as tensors (no host
  synchronisation per step), turned into the extra `metrics.csv` columns of `EPOCH_COLUMNS`
  at the end of the epoch (NaN where a column does not apply to the method).

Methods are `nn.Module`s, so their evolving state (thresholds, smoothing buffers, data parameters)
is in their `state_dict`. A method needing its own optimizer returns it from `make_optimizer`.

Adding a method is a few lines: a builder in `METHODS`.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curriculoss.data_parameters import DataParameters
from curriculoss.focal import focal_loss
from curriculoss.gce import gce_loss
from curriculoss.imae import IMAE, imae
from curriculoss.mae import mae_loss
from curriculoss.sce import sce_loss
from curriculoss.superloss import SuperLoss

__all__ = ["MethodOptions", "Method", "METHODS", "BASE_LOSSES", "EPOCH_COLUMNS", "build_method", "library_default"]

#: Extra per-epoch metrics: SuperLoss's share of samples at the cap (beta <= -2/e, sigma* = e, the
#: largest confidence: the whole step is then e times the base loss's) and its mean sigma*.
EPOCH_COLUMNS = ("sl_cap_share", "sl_mean_sigma")


def _regression_output(output: Tensor) -> Tensor:
    return output.squeeze(-1) if output.dim() > 1 and output.shape[-1] == 1 else output


def _per_sample_sum(loss: Tensor) -> Tensor:
    """Sum over the outputs of each sample (multi-output regression); an empty batch stays empty."""
    return loss.flatten(1).sum(1) if loss.dim() > 1 else loss


def _l2(output: Tensor, target: Tensor) -> Tensor:
    out = _regression_output(output)
    return _per_sample_sum(F.mse_loss(out, target.to(out.dtype), reduction="none"))


def _smooth_l1(output: Tensor, target: Tensor) -> Tensor:
    out = _regression_output(output)
    return _per_sample_sum(F.smooth_l1_loss(out, target.to(out.dtype), reduction="none"))


#: Per-sample task losses `(output, target) -> (N,)`: the plain methods and SuperLoss's inputs.
BASE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ce": lambda z, y: F.cross_entropy(z, y, reduction="none"),
    "mae": lambda z, y: mae_loss(z, y, reduction="none"),
    "gce": lambda z, y: gce_loss(z, y, reduction="none"),
    "sce": lambda z, y: sce_loss(z, y, reduction="none"),
    "focal": lambda z, y: focal_loss(z, y, reduction="none"),
    "l2": _l2,
    "smooth-l1": _smooth_l1,
}
REGRESSION_LOSSES = ("l2", "smooth-l1")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the loop's running sums on `device`: float64, or float32 on Apple's MPS, which has
    no float64 (the methods' state is then float32 too: see `train`)."""
    return torch.float32 if device.type == "mps" else torch.float64


def library_default(function: Callable, name: str) -> Any:
    """The default of parameter `name` in the signature of `function` (a loss's or an optimizer's): the
    methods' defaults are the library's, read from where the library writes them."""
    return inspect.signature(function).parameters[name].default


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A method option: its default, and its command-line form (`help`, and argparse's `choices`, or the
    bounds `low`, `high` and `low_open` of a number), from which `curriculoss.harness.arguments` builds the
    option `--NAME` (the field's name with dashes)."""
    return field(default=default, metadata={"help": help, **cli})


_SL_TAU = library_default(SuperLoss, "tau")  # 'avg', 'ema', a number, or 'logC'
_SL_LAM = library_default(SuperLoss, "lam")
_IMAE_T = library_default(IMAE, "T")
_DP_INSTANCE_LR = library_default(DataParameters.optimizer, "instance_lr")


@dataclass
class MethodOptions:
    """Options shared by the methods (the command line's method flags), with the library's defaults.

    Each field is one command-line option (`--base-loss`, `--tau`, ...; `smoothing` is `--no-smoothing`
    and `sl_normalise` is `--sl-step`): a new option is one field here.
    """

    base_loss: str | None = _option(  # SuperLoss's input loss; default ce, or l2 for regression
        None, f"SuperLoss's input loss ({', '.join(BASE_LOSSES)}); default ce, or l2 for regression")
    tau: str = _option(_SL_TAU, f"SuperLoss threshold: avg, ema, logC or a number (default {_SL_TAU})")
    lam: float = _option(_SL_LAM, f"SuperLoss lambda (default {_SL_LAM}: the paper's value for 10 classes)",
                         low=0.0, low_open=True)
    smoothing: float | None = _option(  # None: no per-sample smoothing
        library_default(SuperLoss, "smoothing"), "turn off SuperLoss's per-sample loss smoothing")
    sl_normalise: bool = _option(  # SuperLoss(step='normalised'), the library's default; False: step='paper'
        library_default(SuperLoss, "step") == "normalised",
        "SuperLoss's batch objective: 'normalised' (default) divides it by the batch's mean sigma* (same "
        "per-sample weights, a step never larger than the base loss's); 'paper' is the plain mean, whose step "
        "reaches e times the base loss's (see docs/superloss-collapse)")
    imae_T: float = _option(_IMAE_T, f"IMAE temperature (default {_IMAE_T:g}: the paper's value on noisy data)",
                            low=0.0, high=300.0)
    dp_level: str = _option(  # the paper's choice under label noise (Sec. 3.4)
        library_default(DataParameters, "level"),
        "data-parameter curriculum (default instance: the paper's choice under label noise)",
        choices=("class", "instance", "joint"))
    dp_class_lr: float = _option(library_default(DataParameters.optimizer, "class_lr"),
                                 "class-level data-parameter learning rate", low=0.0)
    dp_instance_lr: float = _option(  # selected on validation splits with a 100-epoch check (docs/defaults.md)
        _DP_INSTANCE_LR, f"instance-level data-parameter learning rate (default {_DP_INSTANCE_LR:g}, selected on "
        "validation splits with a 100-epoch check in which 10 collapsed; see docs/defaults.md)", low=0.0)
    dp_class_weight_decay: float = _option(library_default(DataParameters.optimizer, "class_weight_decay"),
                                           "class-level data-parameter weight decay on log sigma (default 5e-4)",
                                           low=0.0)
    dp_instance_weight_decay: float = _option(
        library_default(DataParameters.optimizer, "instance_weight_decay"),
        "instance-level data-parameter weight decay on log sigma (default 0, the reference's)", low=0.0)
    dp_weight_decay_mode: str = _option(  # the reference's: counted once per occurrence in the batch
        library_default(DataParameters.optimizer, "weight_decay_mode"),
        "data-parameter weight decay counted per occurrence in the batch (default, the reference "
        "implementation's) or once per present row (plain L2)", choices=("per_sample", "per_row"))


class Method(nn.Module):
    """A plain per-sample loss, averaged. Subclasses add weighting and state."""

    def __init__(self, base: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.base = base
        self.per_sample_loss: Tensor | None = None
        self.confidence: Tensor | None = None
        self._epoch_sums: Tensor | None = None

    def forward(self, output: Tensor, target: Tensor, index: Tensor) -> Tensor:
        loss = self.base(output, target)
        self.per_sample_loss = loss.detach()
        return loss.mean()

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def summary(self) -> float | None:
        return None

    def start_epoch(self) -> None:
        self._epoch_sums = None

    def _accumulate(self, sums: Tensor) -> None:
        """Add this batch's sums to the epoch's, kept in `accumulator_dtype` (in place after the first)."""
        if self._epoch_sums is None:
            self._epoch_sums = sums.to(accumulator_dtype(sums.device))
        else:
            self._epoch_sums.add_(sums)

    def epoch_sums(self) -> Tensor | None:
        """This epoch's running sums (a float64 tensor, summable over ranks), or `None`."""
        return self._epoch_sums

    def epoch_columns(self, sums: Tensor | None) -> dict[str, float]:
        return {name: float("nan") for name in EPOCH_COLUMNS}


class IMAEMethod(Method):
    def __init__(self, T: float):
        super().__init__(lambda z, y: imae(z, y, T=T, reduction="none"))
        self.T = T

    def forward(self, output: Tensor, target: Tensor, index: Tensor) -> Tensor:
        loss = super().forward(output, target, index)
        p = 1.0 - self.per_sample_loss / 2.0  # MAE = 2 (1 - p_y)
        self.confidence = torch.exp(self.T * p * (1.0 - p))
        return loss


class SuperLossMethod(Method):
    """SuperLoss (Eqs. 1-4) on a per-sample base loss; the batch objective (`step`) is the
    criterion's own (`SuperLoss`, normalised by default)."""

    def __init__(self, base: Callable[[Tensor, Tensor], Tensor], criterion: SuperLoss):
        super().__init__(base)
        self.criterion = criterion
        self._epoch_count = 0  # samples this epoch: known on the host, so never a tensor per step

    def start_epoch(self) -> None:
        super().start_epoch()
        self._epoch_count = 0

    def forward(self, output: Tensor, target: Tensor, index: Tensor) -> Tensor:
        loss = self.base(output, target)
        self.per_sample_loss = loss.detach()
        out = self.criterion(loss, index if self.criterion.num_samples is not None else None)
        self.confidence = self.criterion.confidence
        # A handful of operations per step: the batch's (share at the cap, sum of sigma*) as one tensor
        # added to the epoch's sums, the count on the host.
        with torch.no_grad():
            sigma_sum = self.confidence.sum()
            self._accumulate(torch.stack([self.criterion.at_cap.sum(dtype=sigma_sum.dtype), sigma_sum]))
            self._epoch_count += self.confidence.numel()
        return out

    def epoch_sums(self) -> Tensor | None:
        """(samples at the cap, sum of sigma*, count) of this epoch, summable over ranks; `None` if none."""
        if self._epoch_sums is None:
            return None
        count = self._epoch_sums.new_full((1,), float(self._epoch_count))
        return torch.cat([self._epoch_sums, count])

    def summary(self) -> float | None:
        return float(self.criterion.tau)

    def epoch_columns(self, sums: Tensor | None) -> dict[str, float]:
        if sums is None or float(sums[2]) == 0:
            return super().epoch_columns(sums)
        cap, sigma, count = (float(v) for v in sums)
        return {"sl_cap_share": cap / count, "sl_mean_sigma": sigma / count}


class DataParametersMethod(Method):
    def __init__(self, data_parameters: DataParameters, options: MethodOptions):
        super().__init__(lambda z, y: F.cross_entropy(z, y, reduction="none"))
        self.dp = data_parameters
        self.options = options

    def forward(self, output: Tensor, target: Tensor, index: Tensor) -> Tensor:
        with torch.no_grad():
            self.per_sample_loss = F.cross_entropy(output, target, reduction="none")
        loss = F.cross_entropy(self.dp(output, target, index), target)
        # The ranking signal is the instance parameter (Data Parameters Fig. 4), or the class
        # parameter of the sample's label when only classes are learned.
        if self.dp.log_instance_sigma is not None and self.dp.log_class_sigma is None:
            self.confidence = self.dp.last_sigma  # exp(w_i[index]), as the forward computed it (detached)
        elif self.dp.log_instance_sigma is not None:
            self.confidence = self.dp.log_instance_sigma.detach().index_select(0, index).exp()
        else:
            self.confidence = self.dp.log_class_sigma.detach().index_select(0, target).exp()
        return loss

    def make_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        return self.dp.optimizer(
            class_lr=o.dp_class_lr, instance_lr=o.dp_instance_lr,
            class_weight_decay=o.dp_class_weight_decay, instance_weight_decay=o.dp_instance_weight_decay,
            weight_decay_mode=o.dp_weight_decay_mode,
        )

    def summary(self) -> float | None:
        return float(self.confidence.mean()) if self.confidence is not None else None


def _superloss(o: MethodOptions, num_classes: int | None, num_samples: int) -> Method:
    base = o.base_loss or ("ce" if num_classes else "l2")
    if base not in BASE_LOSSES:
        raise ValueError(f"base loss must be one of {', '.join(BASE_LOSSES)}; got {base!r}")
    if bool(num_classes) == (base in REGRESSION_LOSSES):  # l2 on class indices: a shape error deep in training
        task, fits = (("classification", [b for b in BASE_LOSSES if b not in REGRESSION_LOSSES]) if num_classes
                      else ("regression", list(REGRESSION_LOSSES)))
        raise ValueError(f"--base-loss {base} does not fit a {task} task; use one of {', '.join(fits)}")
    tau: str | float = o.tau
    if tau == "logC":
        if not num_classes:
            raise ValueError("tau='logC' needs a classification task")
        tau = math.log(num_classes)
    elif tau not in ("avg", "ema"):
        tau = float(tau)
    smoothing = o.smoothing
    criterion = SuperLoss(
        tau=tau, lam=o.lam, num_samples=num_samples if smoothing is not None else None,
        smoothing=smoothing if smoothing is not None else library_default(SuperLoss, "smoothing"),
        step="normalised" if o.sl_normalise else "paper",
    )
    return SuperLossMethod(BASE_LOSSES[base], criterion)


def _data_params(o: MethodOptions, num_classes: int | None, num_samples: int) -> Method:
    if not num_classes:
        raise ValueError("method 'data-params' needs a classification task")
    return DataParametersMethod(DataParameters(num_classes, num_samples, level=o.dp_level), o)


def _plain(name: str) -> Callable[[MethodOptions, int | None, int], Method]:
    return lambda o, c, n: Method(BASE_LOSSES[name])


#: name -> builder(options, num_classes or None for regression, num_training_samples)
METHODS: dict[str, Callable[[MethodOptions, int | None, int], Method]] = {
    **{name: _plain(name) for name in BASE_LOSSES},
    "imae": lambda o, c, n: IMAEMethod(o.imae_T),
    "superloss": _superloss,
    "data-params": _data_params,
}


def build_method(name: str, options: MethodOptions, num_classes: int | None, num_samples: int) -> Method:
    """The method called `name` for a task with `num_classes` (`None`: regression)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    regression = num_classes is None
    if regression and name not in (*REGRESSION_LOSSES, "superloss"):
        raise ValueError(f"method {name!r} is for classification; for regression use l2, smooth-l1 or superloss")
    if not regression and name in REGRESSION_LOSSES:
        raise ValueError(f"method {name!r} is for regression; the task is classification")
    return METHODS[name](options, num_classes, num_samples)
