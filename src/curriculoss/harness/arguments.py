"""The options of `curriculoss train`, `run` and `bench`, built from the configuration's defaults, and the
configuration they give (`build_config`).

Every default is written once: a run's in `curriculoss.harness.config.TrainConfig`, a method's in
`curriculoss.harness.methods.MethodOptions` (which reads the library's own defaults from its
signatures), each model's learning rate in `curriculoss.harness.models.DEFAULT_LR`. The option
`--NAME` of a method option is built from its field (help, choices, bounds): a new method option is
one field of `MethodOptions`.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import fields

from curriculoss import noise
from curriculoss.harness.augment import AUGMENTS
from curriculoss.harness.config import (AMP_DTYPES, FLOAT32_MAX, RUNTIME_FIELDS, SCHEDULES, STREAM_MODES,
                                       TrainConfig)
from curriculoss.harness.data import DATASETS, TASKS
from curriculoss.harness.methods import METHODS, MethodOptions

__all__ = ["add_run_options", "build_config", "config_fields", "FIELD_OF", "BENCH_METHODS", "BENCH_RATES",
           "BENCH_SEEDS"]

NOISES = tuple(kind for kind in noise.KINDS if kind != "none")
#: `bench`'s grid when no option names it.
BENCH_METHODS = ("ce", "superloss", "data-params", "imae")
BENCH_RATES = (0.0, 0.4)
BENCH_SEEDS = (0, 1, 2)
#: The configuration field of an option whose name differs from it.
FIELD_OF = {"no_smoothing": "smoothing", "sl_step": "sl_normalise"}
_DEFAULT = TrainConfig()


def _or(convert, text: str, fallback):
    """`convert(text)`, or `fallback` when `convert` raises ValueError (the types below then raise
    argparse's error with their own wording)."""
    try:
        return convert(text)
    except ValueError:
        return fallback


def _float(text: str) -> float:
    """`text` as a float; NaN (outside every interval) when it is not a number."""
    return _or(float, text, math.nan)


def _rate(text: str) -> float:
    """An argparse type: a noise rate, a number in [0, 1]."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _int_at_least(low: int, wording: str):
    """An argparse type: an integer >= `low`; `wording` says what was expected."""
    def parse(text: str) -> int:
        value = _or(int, text, low - 1)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _workers(text: str) -> int:
    """An argparse type: DataLoader worker processes, at most 64 and 4 per CPU core of this machine."""
    bound = min(64, 4 * (os.cpu_count() or 1))
    value = _nonnegative_int(text)
    if value > bound:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {bound}] (at most 64, and 4 per CPU core "
                                         f"here), got {text!r}")
    return value


def _number(low: float, high: float = FLOAT32_MAX, *, low_open: bool = False, high_open: bool = False):
    """An argparse type: a finite number in [low, high] (open at either end with low_open, high_open); the
    default high is float32's largest value, which the parameters and the optimizer's steps must fit in."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _float(text)
        if not (math.isfinite(value) and (value > low if low_open else value >= low)
                and (value < high if high_open else value <= high)):
            raise argparse.ArgumentTypeError(f"expected a finite number in {interval}, got {text!r}")
        return value

    return parse


def _model(text: str) -> str:
    from curriculoss.harness.models import MODELS, check_model_name

    name = _or(check_model_name, text, None)
    if name is None:
        # argparse's own wording for a bad choice, with the forms a name may also take
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(MODELS)}, "
                                         f"wrnDEPTH-WIDTH, or package.module:factory)")
    return name


def _milestones(text: str) -> list[int]:
    values = _or(lambda t: [int(v) for v in t.replace(",", " ").split()], text, [])
    if not values or any(v < 1 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing positive epochs such as '60,120,160', got {text!r}")
    return values


def _tau(text: str) -> str:
    if text in ("avg", "ema", "logC"):
        return text
    if not math.isfinite(_float(text)):
        raise argparse.ArgumentTypeError(f"expected 'avg', 'ema', 'logC' or a finite number, got {text!r}")
    return text


def add_run_options(p: argparse.ArgumentParser, grid: bool) -> None:
    """The options of a run (`train`, `run`) or, with `grid`, of a grid of runs (`bench`), in groups."""
    _data_options(p.add_argument_group("data and noise"), grid)
    _optimisation_options(p.add_argument_group("model and optimisation"), grid)
    _hardware_options(p.add_argument_group("hardware"))
    _method_options(p.add_argument_group("method options"))
    _output_options(p.add_argument_group("output"))


def _data_options(data, grid: bool) -> None:
    data.add_argument("--dataset", choices=DATASETS, default=_DEFAULT.dataset,
                      help=f"default: {_DEFAULT.dataset} (scikit-learn, offline)")
    data.add_argument("--data-dir", help="directory (or file) of the dataset for idx, cifar10, cifar100, imagefolder, "
                                         "npz, csv (default: none, for digits)")
    data.add_argument("--augment", choices=AUGMENTS,
                      help="batch-wise augmentation on the device (default: crop-flip for cifar10/cifar100, else none)")
    data.add_argument("--image-size", type=_positive_int, default=_DEFAULT.image_size,
                      help=f"imagefolder: resize images to this side (default {_DEFAULT.image_size})")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="imagefolder: skip unreadable images (counted) instead of stopping at the first")
    data.add_argument("--workers", type=_workers, default=_DEFAULT.workers,
                      help="imagefolder: DataLoader worker processes decoding the images, when the set is read and, "
                           f"streamed, per batch (default {_DEFAULT.workers}: in this process)")
    data.add_argument("--stream", choices=STREAM_MODES,
                      help="imagefolder: 'yes' keeps only the file paths and decodes each training and test batch "
                           "(with --workers) in the run's seeded order; 'no' holds the decoded set in memory on the "
                           "device; 'auto' (default) streams when the decoded set (N x 3 x S x S float32) exceeds a "
                           "quarter of the available host (and GPU) memory. Both give identical results")
    data.add_argument("--task", choices=TASKS, default=_DEFAULT.task,
                      help="classification, or regression of the label's value (digits: the digit)")
    data.add_argument("--limit", type=_positive_int, help="use only the first N training samples (default: all)")
    data.add_argument("--noise", choices=NOISES, default=_DEFAULT.noise,
                      help="symmetric (the new class may be the true one), pair (y -> y+1), asymmetric (class map), "
                           "or file (--noise-file)")
    data.add_argument("--noise-file", help="noisy training labels for --noise file: .npy or .csv, one per training "
                                           "sample (default: none)")
    if grid:
        data.add_argument("--noise-rates", type=_rate, nargs="+", default=list(BENCH_RATES), metavar="RATE",
                          help="shares of training labels to corrupt, one grid column each")
    else:
        data.add_argument("--noise-rate", type=_rate, default=_DEFAULT.noise_rate, metavar="RATE",
                          help="share of training labels to corrupt, in [0, 1]")
    data.add_argument("--holdout", type=_number(0.0, 1.0, high_open=True), default=_DEFAULT.holdout,
                      metavar="FRACTION",
                      help="share of the training set held out of training, with its noisy labels, to select an "
                           "epoch (results.json 'selected', reported beside 'final'); in [0, 1), default "
                           f"{_DEFAULT.holdout:g}: off")


def _optimisation_options(run, grid: bool) -> None:
    from curriculoss.harness.models import DEFAULT_LR, MODELS

    run.add_argument("--model", type=_model, default=_DEFAULT.model, metavar="MODEL",
                     help=f"{', '.join(MODELS)}, wrnDEPTH-WIDTH, or package.module:factory (a callable taking "
                          f"num_classes and returning an nn.Module; default {_DEFAULT.model})")
    if grid:
        run.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(BENCH_METHODS), metavar="METHOD",
                         help=f"choices: {', '.join(METHODS)}")
        run.add_argument("--seeds", type=int, nargs="+", default=list(BENCH_SEEDS),
                         help=f"default {' '.join(map(str, BENCH_SEEDS))}: mean ± std over {len(BENCH_SEEDS)} seeds")
    else:
        run.add_argument("--method", choices=list(METHODS), default=_DEFAULT.method, metavar="METHOD",
                         help=f"choices: {', '.join(METHODS)}")
        run.add_argument("--seed", type=int, default=_DEFAULT.seed,
                         help="seed of the label noise, the initialisation and the sample order")
    run.add_argument("--epochs", type=_positive_int, default=_DEFAULT.epochs, help="training epochs")
    run.add_argument("--batch-size", type=_positive_int, default=_DEFAULT.batch_size, help="samples per SGD step")
    run.add_argument("--lr", type=_number(0.0, low_open=True), default=None,
                     help="SGD learning rate (default: per model, " +
                          ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ", others 0.1; see docs/defaults.md)")
    run.add_argument("--weight-decay", type=_number(0.0), default=_DEFAULT.weight_decay,
                     help="SGD weight decay (L2) of the network")
    run.add_argument("--schedule", choices=SCHEDULES, default=_DEFAULT.schedule,
                     help="learning-rate schedule per epoch (default cosine annealing to 0)")
    run.add_argument("--milestones", type=_milestones, default=list(_DEFAULT.milestones), metavar="E1,E2,...",
                     help="with --schedule step: epochs after which lr is multiplied by --gamma (default: none)")
    run.add_argument("--gamma", type=_number(0.0, 1.0, low_open=True), default=_DEFAULT.gamma,
                     help=f"step schedule factor (default {_DEFAULT.gamma:g})")
    run.add_argument("--warmup", type=_nonnegative_int, default=_DEFAULT.warmup,
                     help=f"epochs of linear learning-rate warmup (default {_DEFAULT.warmup})")


def _hardware_options(hw) -> None:
    hw.add_argument("--device", help="auto (default: CUDA if available, else CPU), cpu, cuda, cuda:N or mps; "
                                     "with --resume it may differ from the run's")
    hw.add_argument("--amp", choices=tuple(AMP_DTYPES),
                    help="mixed precision: the model under torch.autocast (default: none, float32)")
    hw.add_argument("--compile", action="store_true", help="wrap the model in torch.compile (and run SuperLoss's step as one compiled graph, fused=True)")


def _method_options(m) -> None:
    """One option per field of `MethodOptions`, with its default, help, choices and bounds."""
    for f in fields(MethodOptions):
        if f.name == "smoothing":
            m.add_argument("--no-smoothing", action="store_true", help=f.metadata["help"])
        elif f.name == "sl_normalise":
            m.add_argument("--sl-step", choices=("normalised", "paper"), default="normalised" if f.default else "paper",
                           help=f.metadata["help"])
        else:
            m.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=f.metadata["help"], **_parsing(f))


def _parsing(f) -> dict:
    """How the option of a `MethodOptions` field parses its value: its choices, or a number's bounds."""
    if "choices" in f.metadata:
        return {"choices": f.metadata["choices"]}
    if f.name == "tau":
        return {"type": _tau}
    if f.type in (float, "float"):
        high = f.metadata.get("high", FLOAT32_MAX)
        return {"type": _number(f.metadata.get("low", 0.0), high, low_open=f.metadata.get("low_open", False))}
    return {}


def _output_options(out) -> None:
    out.add_argument("--config", metavar="FILE",
                     help="read options from a TOML file (YAML with PyYAML installed) of the long options without "
                          "their dashes, e.g. noise-rate = 0.4; options given on the command line override it. "
                          "Every run folder holds its options as config.toml (default: none)")
    out.add_argument("--out", help="run folder (train; default: runs/DATASET-METHOD-rateR-seedS and the other "
                                   "options given, e.g. -lr0.05-e10, see docs/command-line.md) or grid folder (bench; default: "
                                   "runs/bench); an existing one is refused, see --resume, --overwrite")
    again = out.add_mutually_exclusive_group()
    runtime = ", ".join(f"--{name}" for name in RUNTIME_FIELDS)  # where a run trains, not what it trains
    again.add_argument("--resume", metavar="DIR",
                       help="continue the run (or grid) in DIR from its checkpoints, with the options it was started "
                            f"with (default: none, a new run); options given must match them, except {runtime} "
                            "and, for a run, more --epochs")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run (or grid) already in --out: its files are removed first")
    out.add_argument("--quiet", action="store_true",
                     help="no progress (else a bar on a terminal, one line per epoch into a file or a pipe)")


def build_config(args: argparse.Namespace, method: str = _DEFAULT.method, rate: float = _DEFAULT.noise_rate,
                 seed: int = _DEFAULT.seed) -> TrainConfig:
    """The configuration of the options `args` (as `add_run_options` parses them) for one run of `method`
    at noise rate `rate` with `seed`: a grid's cell, or the run of `train`."""
    options = {f.name: getattr(args, f.name) for f in fields(MethodOptions) if f.name not in FIELD_OF.values()}
    options = MethodOptions(**options, smoothing=None if args.no_smoothing else MethodOptions.smoothing,
                            sl_normalise=args.sl_step == "normalised")
    given = {name: getattr(args, name) for name in _FROM_ARGS}
    return TrainConfig(**given, method=method, noise_rate=rate, seed=seed, options=options, lr=_default_lr(args),
                       milestones=list(args.milestones), device=args.device or _DEFAULT.device,
                       stream=args.stream or _DEFAULT.stream)


#: The configuration fields an option of the same name sets as given.
_FROM_ARGS = ("dataset", "data_dir", "task", "limit", "model", "noise", "noise_file", "holdout", "epochs",
              "batch_size", "weight_decay", "augment", "schedule", "gamma", "warmup", "image_size", "skip_bad_images",
              "amp", "compile", "workers")


def _default_lr(args: argparse.Namespace) -> float:
    from curriculoss.harness.models import default_lr

    return args.lr if args.lr is not None else default_lr(args.model)


def config_fields(cfg: TrainConfig) -> dict:
    """A configuration's fields, its method options among them."""
    data = cfg.to_json()
    return {**{k: v for k, v in data.items() if k != "options"}, **data["options"]}
