"""A run's configuration: `TrainConfig`, its checks, and its forms in a run folder.

`TrainConfig` holds every default of a run (and `curriculoss.harness.methods.MethodOptions` those of
the methods); the command line's options are built from these fields
(`curriculoss.harness.arguments`). `check_config` refuses a configuration before anything is loaded;
`toml_text` writes it as the options of `curriculoss train --config`.
"""
from __future__ import annotations

import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from curriculoss import noise
from curriculoss.checks import check_number
from curriculoss.harness import data as datasets
from curriculoss.harness.augment import AUGMENTS
from curriculoss.harness.methods import METHODS, MethodOptions
from curriculoss.harness.models import check_model_name

__all__ = ["TrainConfig", "RUNTIME_FIELDS", "SCHEDULES", "STREAM_MODES", "AMP_DTYPES", "check_config", "same_run",
           "default_augment", "toml_text"]


@dataclass
class TrainConfig:
    """One run's configuration: what it trains (data, noise, model, method, optimisation) and where
    (`RUNTIME_FIELDS`). The defaults here are the command line's (`curriculoss train`), the learning
    rate aside: the command line takes the model's (`curriculoss.harness.models.default_lr`)."""

    dataset: str = "digits"
    data_dir: str | None = None
    task: str = "classification"
    limit: int | None = None
    model: str = "mlp"
    method: str = "ce"
    noise: str = "symmetric"
    noise_rate: float = 0.0
    noise_file: str | None = None  # the noisy labels for noise='file' (.npy or .csv)
    holdout: float = 0.0  # share of the training set held out (noisy labels kept) to select an epoch; 0: off
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


def same_run(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    """Whether two configurations (as JSON) train the same run: `RUNTIME_FIELDS` and `ignore` aside, and
    the fields an older `args.json` did not have yet counted as their defaults."""
    defaults = TrainConfig().to_json()
    keys = (set(a) | set(b)) - set(RUNTIME_FIELDS) - set(ignore)
    return all(a.get(k, defaults.get(k)) == b.get(k, defaults.get(k)) for k in keys)


def default_augment(cfg: "TrainConfig") -> str:
    """The run's augmentation: `cfg.augment`, else crop-flip for cifar10 and cifar100 and none otherwise."""
    if cfg.augment is not None:
        return cfg.augment
    return "crop-flip" if cfg.dataset in ("cifar10", "cifar100") else "none"


def _options_before_defaults_changed(options: dict[str, Any]) -> dict[str, Any]:
    """A configuration written before an option existed keeps the behaviour it was trained with."""
    options = dict(options)
    options.setdefault("sl_normalise", False)  # SuperLoss's normalised step became the default later
    return {k: v for k, v in options.items() if k in {f.name for f in fields(MethodOptions)}}


#: float32's largest value, which the parameters and the optimizer's steps must fit in.
FLOAT32_MAX = 3.4028234663852886e38


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
    check_number("holdout", cfg.holdout, low=0.0, high=1.0, high_open=True)
    check_number("lr", cfg.lr, low=0.0, high=FLOAT32_MAX, low_open=True)
    check_number("momentum", cfg.momentum, low=0.0, high=1.0, high_open=True)
    check_number("weight_decay", cfg.weight_decay, low=0.0, high=FLOAT32_MAX)
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
    if cfg.momentum != TrainConfig.momentum or cfg.options.smoothing not in (None, MethodOptions.smoothing):
        lines.append(f"# Not command-line options: momentum {cfg.momentum}, smoothing {cfg.options.smoothing} "
                     "(see args.json).")
    lines += [f"{key} = {_toml_value(value)}" for key, value in _cli_options(cfg).items()]
    return "\n".join(lines) + "\n"
