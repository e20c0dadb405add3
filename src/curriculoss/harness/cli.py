"""The `curriculoss` command line (also `python -m curriculoss`).

Commands:
    run     the quick demonstration: CE vs SuperLoss on digits with 40 % symmetric noise
    train   one run into a run folder (data-parallel under `torchrun --nproc_per_node K -m curriculoss train`)
    bench   a grid of methods x noise rates x seeds, with a summary table and plot
    flag    rank a run's training samples by how likely their label is wrong
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from curriculoss import __version__

DATASETS = ("digits", "idx", "cifar10", "cifar100", "imagefolder", "npz", "csv")
NOISES = ("symmetric", "pair", "asymmetric", "file")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _int_at_least(low: int, wording: str):
    """An argparse type: an integer >= `low`; `wording` says what was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
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


def _number(low: float, high: float = 3.4028234663852886e38, *, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] with low_open); the default high
    is float32's largest value, which the parameters and the optimizer's steps must fit in."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(f"expected a finite number in {interval}, got {text!r}")
        return value

    return parse


def _model(text: str) -> str:
    from curriculoss.harness.models import check_model_name

    from curriculoss.harness.models import MODELS

    try:
        return check_model_name(text)
    except ValueError:
        # argparse's own wording for a bad choice, with the forms a name may also take
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(MODELS)}, "
                                         f"wrnDEPTH-WIDTH, or package.module:factory)") from None


def _milestones(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing positive epochs such as '60,120,160', got {text!r}")
    return values


def _tau(text: str) -> str:
    if text in ("avg", "ema", "logC"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected 'avg', 'ema', 'logC' or a finite number, got {text!r}")
    return text


def _add_common(p: argparse.ArgumentParser, grid: bool) -> None:
    from curriculoss.harness.methods import METHODS
    from curriculoss.harness.models import DEFAULT_LR, MODELS

    data = p.add_argument_group("data and noise")
    data.add_argument("--dataset", choices=DATASETS, default="digits", help="default: digits (scikit-learn, offline)")
    data.add_argument("--data-dir", help="directory (or file) of the dataset for idx, cifar10, cifar100, imagefolder, "
                                         "npz, csv (default: none, for digits)")
    data.add_argument("--augment", choices=("none", "crop-flip"),
                      help="batch-wise augmentation on the device (default: crop-flip for cifar10/cifar100, else none)")
    data.add_argument("--image-size", type=_positive_int, default=32, help="imagefolder: resize images to this side (default 32)")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="imagefolder: skip unreadable images (counted) instead of stopping at the first")
    data.add_argument("--workers", type=_workers, default=0,
                      help="imagefolder: DataLoader worker processes decoding the images, when the set is read and, "
                           "streamed, per batch (default 0: in this process)")
    data.add_argument("--stream", choices=("auto", "yes", "no"),
                      help="imagefolder: 'yes' keeps only the file paths and decodes each training and test batch "
                           "(with --workers) in the run's seeded order; 'no' holds the decoded set in memory on the "
                           "device; 'auto' (default) streams when the decoded set (N x 3 x S x S float32) exceeds a "
                           "quarter of the available host (and GPU) memory. Both give identical results")
    data.add_argument("--task", choices=("classification", "regression"), default="classification",
                      help="classification, or regression of the label's value (digits: the digit)")
    data.add_argument("--limit", type=_positive_int, help="use only the first N training samples (default: all)")
    data.add_argument("--noise", choices=NOISES, default="symmetric",
                      help="symmetric (the new class may be the true one), pair (y -> y+1), asymmetric (class map), "
                           "or file (--noise-file)")
    data.add_argument("--noise-file", help="noisy training labels for --noise file: .npy or .csv, one per training "
                                           "sample (default: none)")
    if grid:
        data.add_argument("--noise-rates", type=_rate, nargs="+", default=[0.0, 0.4], metavar="RATE",
                          help="shares of training labels to corrupt, one grid column each")
    else:
        data.add_argument("--noise-rate", type=_rate, default=0.0, metavar="RATE",
                          help="share of training labels to corrupt, in [0, 1]")

    run = p.add_argument_group("model and optimisation")
    run.add_argument("--model", type=_model, default="mlp", metavar="MODEL",
                     help=f"{', '.join(MODELS)}, wrnDEPTH-WIDTH, or package.module:factory (a callable taking "
                          "num_classes and returning an nn.Module; default mlp)")
    if grid:
        run.add_argument("--methods", nargs="+", choices=list(METHODS), default=["ce", "superloss", "data-params", "imae"], metavar="METHOD",
                         help=f"choices: {', '.join(METHODS)}")
        run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                         help="default 0 1 2: mean ± std over 3 seeds")
    else:
        run.add_argument("--method", choices=list(METHODS), default="ce", metavar="METHOD", help=f"choices: {', '.join(METHODS)}")
        run.add_argument("--seed", type=int, default=0,
                         help="seed of the label noise, the initialisation and the sample order")
    run.add_argument("--epochs", type=_positive_int, default=30, help="training epochs")
    run.add_argument("--batch-size", type=_positive_int, default=64, help="samples per SGD step")
    run.add_argument("--lr", type=_number(0.0, low_open=True), default=None,
                     help="SGD learning rate (default: per model, " +
                          ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ", others 0.1; see docs/defaults.md)")
    run.add_argument("--weight-decay", type=_number(0.0), default=5e-4, help="SGD weight decay (L2) of the network")
    run.add_argument("--schedule", choices=("cosine", "step"), default="cosine",
                     help="learning-rate schedule per epoch (default cosine annealing to 0)")
    run.add_argument("--milestones", type=_milestones, default=[], metavar="E1,E2,...",
                     help="with --schedule step: epochs after which lr is multiplied by --gamma (default: none)")
    run.add_argument("--gamma", type=_number(0.0, 1.0, low_open=True), default=0.1, help="step schedule factor (default 0.1)")
    run.add_argument("--warmup", type=_nonnegative_int, default=0, help="epochs of linear learning-rate warmup (default 0)")

    hw = p.add_argument_group("hardware")
    hw.add_argument("--device", help="auto (default: CUDA if available, else CPU), cpu, cuda, cuda:N or mps; "
                                     "with --resume it may differ from the run's")
    hw.add_argument("--amp", choices=("bf16", "fp16"),
                    help="mixed precision: the model under torch.autocast (default: none, float32)")
    hw.add_argument("--compile", action="store_true", help="wrap the model in torch.compile (and run SuperLoss's step as one compiled graph, fused=True)")

    m = p.add_argument_group("method options")
    m.add_argument("--base-loss", help="SuperLoss's input loss (ce, mae, gce, sce, focal, l2, smooth-l1); default ce, or l2 for regression")
    m.add_argument("--tau", type=_tau, default="avg", help="SuperLoss threshold: avg, ema, logC or a number (default avg)")
    m.add_argument("--lam", type=_number(0.0, low_open=True), default=1.0, help="SuperLoss lambda (default 1.0: the paper's value for 10 classes)")
    m.add_argument("--no-smoothing", action="store_true", help="turn off SuperLoss's per-sample loss smoothing")
    m.add_argument("--sl-step", choices=("normalised", "paper"), default="normalised",
                   help="SuperLoss's batch objective: 'normalised' (default) divides it by the batch's mean sigma* "
                        "(same per-sample weights, a step never larger than the base loss's); 'paper' is the plain "
                        "mean, whose step reaches e times the base loss's (see docs/superloss-collapse)")
    m.add_argument("--imae-T", type=_number(0.0, 300.0), default=8.0, help="IMAE temperature (default 8: the paper's value on noisy data)")
    m.add_argument("--dp-level", choices=("class", "instance", "joint"), default="instance",
                   help="data-parameter curriculum (default instance: the paper's choice under label noise)")
    m.add_argument("--dp-class-lr", type=_number(0.0), default=0.1, help="class-level data-parameter learning rate")
    m.add_argument("--dp-instance-lr", type=_number(0.0), default=1.0,
                   help="instance-level data-parameter learning rate (default 1, selected on validation splits "
                        "with a 100-epoch check in which 10 collapsed; see docs/defaults.md)")
    m.add_argument("--dp-class-weight-decay", type=_number(0.0), default=5e-4,
                   help="class-level data-parameter weight decay on log sigma (default 5e-4)")
    m.add_argument("--dp-instance-weight-decay", type=_number(0.0), default=0.0,
                   help="instance-level data-parameter weight decay on log sigma (default 0, the reference's)")
    m.add_argument("--dp-weight-decay-mode", choices=("per_sample", "per_row"), default="per_sample",
                   help="data-parameter weight decay counted per occurrence in the batch (default, the reference "
                        "implementation's) or once per present row (plain L2)")

    out = p.add_argument_group("output")
    out.add_argument("--config", metavar="FILE",
                     help="read options from a TOML file (YAML with PyYAML installed) of the long options without "
                          "their dashes, e.g. noise-rate = 0.4; options given on the command line override it. "
                          "Every run folder holds its options as config.toml (default: none)")
    out.add_argument("--out", help="run folder (train; default: runs/DATASET-METHOD-rateR-seedS and the other "
                                   "options given, e.g. -lr0.05-e10, see docs/command-line.md) or grid folder (bench; default: "
                                   "runs/bench); an existing one is refused, see --resume, --overwrite")
    again = out.add_mutually_exclusive_group()
    again.add_argument("--resume", metavar="DIR",
                       help="continue the run (or grid) in DIR from its checkpoints, with the options it was started "
                            "with (default: none, a new run); options given must match them, except --device, "
                            "--compile, --stream, --workers and, for a run, more --epochs")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run (or grid) already in --out: its files are removed first")
    out.add_argument("--quiet", action="store_true",
                     help="no progress (else a bar on a terminal, one line per epoch into a file or a pipe)")


def _config(args: argparse.Namespace, method: str = "ce", rate: float = 0.0, seed: int = 0):
    from curriculoss.harness.methods import MethodOptions
    from curriculoss.harness.train import TrainConfig

    options = MethodOptions(
        base_loss=args.base_loss, tau=args.tau, lam=args.lam, smoothing=None if args.no_smoothing else 0.9,
        sl_normalise=args.sl_step == "normalised",
        imae_T=args.imae_T, dp_level=args.dp_level, dp_class_lr=args.dp_class_lr, dp_instance_lr=args.dp_instance_lr,
        dp_weight_decay_mode=args.dp_weight_decay_mode, dp_class_weight_decay=args.dp_class_weight_decay,
        dp_instance_weight_decay=args.dp_instance_weight_decay,
    )
    return TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, task=args.task, limit=args.limit, model=args.model,
        method=method, noise=args.noise, noise_rate=rate, noise_file=args.noise_file, epochs=args.epochs, batch_size=args.batch_size,
        lr=_default_lr(args), weight_decay=args.weight_decay, seed=seed, options=options,
        augment=args.augment, schedule=args.schedule, milestones=list(args.milestones), gamma=args.gamma,
        warmup=args.warmup, image_size=args.image_size, skip_bad_images=args.skip_bad_images,
        device=args.device or "auto", amp=args.amp, compile=args.compile, workers=args.workers, stream=args.stream or "auto",
    )


def _default_lr(args: argparse.Namespace) -> float:
    from curriculoss.harness.models import default_lr

    return args.lr if args.lr is not None else default_lr(args.model)


def _read_json(path: Path, what: str):
    """A JSON file the CLI wrote itself; a damaged one is an error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"curriculoss: error: {path}: not a readable {what} ({exc}); the file is damaged") from None


def _read_config(path: Path):
    from curriculoss.harness.train import TrainConfig, check_config

    data = _read_json(path, "run configuration")
    try:
        cfg = TrainConfig.from_json(data if "base" not in data else data["base"])
        check_config(cfg)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        raise SystemExit(f"curriculoss: error: {path}: not a valid curriculoss configuration ({exc})") from None
    return cfg


def _unique(name: str, values: list) -> list:
    """Repeated grid values, dropped (order kept) with a note: a repeated seed is the same run, and
    counting it twice would report one run as several, with a standard deviation of 0."""
    kept = list(dict.fromkeys(values))
    if len(kept) < len(values):
        print(f"curriculoss: note: {name} repeats values; using {' '.join(map(str, kept))}", file=sys.stderr)
    return kept


def _check_data_dir(args: argparse.Namespace) -> None:
    from curriculoss.harness.data._common import _EXPECTED

    if args.dataset != "digits" and not args.data_dir:
        raise SystemExit(f"curriculoss: error: --data-dir is required for --dataset {args.dataset}")
    if args.data_dir and not Path(args.data_dir).exists():
        raise SystemExit(f"curriculoss: error: --data-dir {args.data_dir}: no such file or directory")
    if args.data_dir:
        _refuse_special("--data-dir", args.data_dir, _EXPECTED.get(args.dataset, "a file or a directory"))
    if args.noise == "file" and not args.noise_file:
        raise SystemExit("curriculoss: error: --noise file needs --noise-file (the noisy labels, .npy or .csv)")
    if args.noise_file and not Path(args.noise_file).exists():
        raise SystemExit(f"curriculoss: error: --noise-file {args.noise_file}: no such file")
    if args.noise_file:
        _refuse_special("--noise-file", args.noise_file, ".npy or .csv", directory=False)


def _refuse_special(option: str, path: str, expected: str, directory: bool = True) -> None:
    """Refuse what is not a regular file (or directory) before it is opened: reading `/dev/zero` never
    ends, opening a FIFO blocks until a writer comes."""
    import stat

    from curriculoss.harness.data._common import file_kind

    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode))):
        raise SystemExit(f"curriculoss: error: {option} {path}: {file_kind(mode)}, not a regular file"
                         f"{' or a directory' if directory else ''} (expected {expected})")


#: Options that are not part of what a run trains.
_NOT_CONFIG = {"out", "resume", "overwrite", "quiet", "stop_on_divergence", "config"}
#: The configuration field of an option whose name differs from it.
_FIELD_OF = {"no_smoothing": "smoothing", "sl_step": "sl_normalise"}
#: What a resume may change: where the run trains and, for a run (not a grid), more epochs.
_RESUME_MAY_CHANGE = ("device", "compile", "stream", "workers")


def _flat(cfg) -> dict:
    """A configuration's fields, its method options among them."""
    data = cfg.to_json()
    return {**{k: v for k, v in data.items() if k != "options"}, **data["options"]}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given_fields(args: argparse.Namespace, values: dict) -> dict:
    """The configuration fields that the command line's options set: field -> (option, value)."""
    fields = {}
    for dest in args.given - _NOT_CONFIG:
        field = _FIELD_OF.get(dest, dest)
        fields[field] = (_option(dest), values[field])
    return fields


def _differences(recorded: dict, wanted: dict, may_change: tuple[str, ...], whose: str) -> list[str]:
    """The given options that differ from the recorded configuration and may not change it."""
    found = []
    for field, (option, value) in sorted(wanted.items()):
        old = recorded.get(field)
        if value == old or (field in may_change and (field != "epochs" or value > old)):
            continue
        found.append(f"{option} ({field} {value!r}, {whose} {old!r})")
    return found


def _refuse_differences(folder: Path, found: list[str], may: str) -> None:
    if found:
        raise SystemExit(f"curriculoss: error: --resume {folder}: options differ from the ones it was started with: "
                         f"{', '.join(found)}; a resume may change only {may}; start anew with another --out, or "
                         f"with --out {folder} --overwrite")


def _check_user_model(model: str, args: argparse.Namespace, where: str) -> None:
    """A folder's files are data: a model that is code is imported only when the command line names it."""
    from curriculoss.harness.models import is_factory

    if is_factory(model) and "model" not in args.given:
        raise SystemExit(f"curriculoss: error: {where}: its model {model!r} is code, which is never imported "
                         f"because a folder names it; give --model {model} to import it from your Python path")


def _resume_config(args: argparse.Namespace):
    """The run folder and configuration of `train --resume`: the recorded one, with the changes allowed."""
    run_dir = Path(args.resume)
    if args.out and Path(args.out) != run_dir:
        raise SystemExit(f"curriculoss: error: --out {args.out} and --resume {run_dir} name different folders")
    if not (run_dir / "args.json").exists():
        raise SystemExit(f"curriculoss: error: --resume {run_dir}: no args.json there (not a run folder)")
    recorded = _read_config(run_dir / "args.json")
    wanted = _given_fields(args, _flat(_config(args, args.method, args.noise_rate, args.seed)))
    found = _differences(_flat(recorded), wanted, ("epochs", *_RESUME_MAY_CHANGE), "the run's")
    _refuse_differences(run_dir, found, "--device, --compile, --stream, --workers and --epochs (more)")
    _check_user_model(recorded.model, args, f"--resume {run_dir}")
    changes = {f: value for f, (_, value) in wanted.items() if f in ("epochs", *_RESUME_MAY_CHANGE)}
    return run_dir, replace(recorded, **changes)


def _check_new_run(args: argparse.Namespace) -> None:
    """The options of a new run (or grid) that argparse cannot check one by one."""
    _check_data_dir(args)
    if args.milestones and args.schedule != "step":
        raise SystemExit(f"curriculoss: error: argument --milestones: only used with --schedule step (the schedule "
                         f"is {args.schedule}); add --schedule step or drop --milestones")


def cmd_train(args: argparse.Namespace) -> int:
    from curriculoss.harness.train import train

    if args.resume:
        run_dir, cfg = _resume_config(args)
    else:
        _check_new_run(args)
        cfg = _config(args, args.method, args.noise_rate, args.seed)
        run_dir = Path(args.out or _default_run_dir(args, cfg))
    results = train(cfg, run_dir, resume=bool(args.resume), progress=not args.quiet,
                    stop_on_divergence=args.stop_on_divergence, overwrite=args.overwrite,
                    more_epochs=bool(args.resume))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports (and writes the run folder)
        print(json.dumps(results, indent=2))
        print(f"run folder: {run_dir}")
        return _report_divergence(results)
    return 0


#: The options a default run folder's name shows when they are given, with their prefixes, in this order.
_NAMED = (("model", ""), ("noise", ""), ("lr", "lr"), ("epochs", "e"), ("batch_size", "bs"), ("limit", "n"))


def _default_run_dir(args: argparse.Namespace, cfg) -> str:
    """`runs/DATASET-METHOD-rateR-seedS`, then what else distinguishes the run: the options of `_NAMED`
    that were given (`-lr0.05-e10`), and a short digest of any other option given that changes what is
    trained (`-cfg3fa9c1`), so that runs of different options never share a folder."""
    named = [f"{cfg.dataset}-{cfg.method}-rate{cfg.noise_rate:g}-seed{cfg.seed}"]
    given = _given_fields(args, _flat(cfg))
    named += [prefix + _slug(given[field][1]) for field, prefix in _NAMED if field in given]
    shown = {f for f, _ in _NAMED} | {"dataset", "method", "noise_rate", "seed", *_RESUME_MAY_CHANGE}
    rest = {f: value for f, (_, value) in given.items() if f not in shown}
    if rest:
        named.append("cfg" + hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:6])
    return "runs/" + "-".join(named)


def _slug(value) -> str:
    """`value` as a part of a folder name: 6 significant digits of a number, `_` for `:` or `/`."""
    return re.sub(r"[^A-Za-z0-9._]", "_", f"{value:g}" if isinstance(value, float) else str(value))


def _report_divergence(results: dict) -> int:
    """Say loudly that a run collapsed (exit status 3 when --stop-on-divergence stopped it)."""
    if not results.get("diverged"):
        return 0
    print(f"\nDIVERGED in epoch {results['diverged_epoch']}: {results['divergence']}", file=sys.stderr)
    if results.get("stopped_early"):
        print(f"stopped after epoch {results['epochs_trained']} of {results['epochs']} (--stop-on-divergence)",
              file=sys.stderr)
        return 3
    return 0


def _read_grid(spec: Path):
    """The configuration, methods, noise rates and seeds of a grid.json."""
    saved = _read_json(spec, "grid specification")
    base = _read_config(spec)
    try:
        methods, rates, seeds = (_unique(f"{spec} {key}", saved[key]) for key in ("methods", "noise_rates", "seeds"))
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"curriculoss: error: {spec}: not a curriculoss grid specification (no {exc})") from None
    return base, methods, rates, seeds


def _grid_fields(base, methods: list, rates: list, seeds: list) -> dict:
    return {**_flat(base), "methods": methods, "noise_rates": rates, "seeds": seeds}


def _resume_grid(args: argparse.Namespace):
    """`bench --resume`: the recorded grid, with the changes allowed."""
    out = Path(args.resume)
    if args.out and Path(args.out) != out:
        raise SystemExit(f"curriculoss: error: --out {args.out} and --resume {out} name different folders")
    spec = out / "grid.json"
    if not spec.exists():
        raise SystemExit(f"curriculoss: error: --resume {out}: no grid.json there (not a bench folder)")
    base, methods, rates, seeds = _read_grid(spec)
    distinct = (list(dict.fromkeys(v)) for v in (args.methods, args.noise_rates, args.seeds))
    wanted = _given_fields(args, _grid_fields(_config(args), *distinct))
    found = _differences(_grid_fields(base, methods, rates, seeds), wanted, _RESUME_MAY_CHANGE, "the grid's")
    _refuse_differences(out, found, "--device, --compile, --stream and --workers")
    _check_user_model(base.model, args, f"--resume {out}")
    base = replace(base, **{f: value for f, (_, value) in wanted.items() if f in _RESUME_MAY_CHANGE})
    return out, base, methods, rates, seeds


def _check_grid_folder(out: Path, fields: dict, overwrite: bool) -> None:
    """`bench --out`: never a training run's folder; a grid there must be this one, or be overwritten."""
    from curriculoss.harness.train import RUNTIME_FIELDS, run_files_in

    spec = out / "grid.json"
    if not spec.exists():
        held = run_files_in(out)
        if held:
            raise SystemExit(f"curriculoss: error: --out {out}: a training run folder ({', '.join(held)}), not a "
                             "bench folder; choose another --out")
        return
    if overwrite:
        return
    saved = _grid_fields(*_read_grid(spec))
    found = [f"{k} {fields[k]!r} (the grid's {saved.get(k)!r})" for k in sorted(fields)
             if k not in RUNTIME_FIELDS and fields[k] != saved.get(k)]
    if found:
        raise SystemExit(f"curriculoss: error: --out {out} holds a grid of another configuration: {', '.join(found)}; "
                         f"continue that one with --resume {out}, or give --overwrite to replace it")
    print(f"curriculoss: note: {out} holds this grid already; its finished runs are kept", file=sys.stderr)


def _new_grid(args: argparse.Namespace, default_out: str):
    """`bench --out`: the grid of the command line, checked before anything is written."""
    from curriculoss.harness.bench import check_rates
    from curriculoss.harness.models import is_factory
    from curriculoss.harness.train import build_checked_model, prepare_data

    _check_new_run(args)
    out = Path(args.out or default_out)
    base = _config(args)
    methods = _unique("--methods", args.methods)
    rates = _unique("--noise-rates", args.noise_rates)
    seeds = _unique("--seeds", args.seeds)
    try:
        check_rates(rates)
    except ValueError as exc:
        raise SystemExit(f"curriculoss: error: argument --noise-rates: {exc}") from None
    _check_grid_folder(out, _grid_fields(base, methods, rates, seeds), args.overwrite)
    # a bad data set, noise or model fails before anything is written
    data, _ = prepare_data(replace(base, noise_rate=max(rates)))
    if is_factory(base.model):
        build_checked_model(base, data)
    return out, base, methods, rates, seeds


def cmd_bench(args: argparse.Namespace, default_out: str = "runs/bench") -> int:
    from curriculoss.harness.bench import clear_grid, format_table, memorisation_gaps, run_grid, summarise, write_summary
    from curriculoss.harness.runlock import run_folder_lock

    out, base, methods, rates, seeds = _resume_grid(args) if args.resume else _new_grid(args, default_out)
    with run_folder_lock(out):  # one bench per grid folder
        if args.overwrite:
            clear_grid(out)
        if not args.resume:
            (out / "grid.json").write_text(json.dumps(
                {"base": base.to_json(), "methods": methods, "noise_rates": rates, "seeds": seeds}, indent=2) + "\n")
        rows = run_grid(base, methods, rates, seeds, out, progress=not args.quiet)
        summary = summarise(rows)
        write_summary(summary, out)
    print(f"\n{base.dataset}, {base.model}, {base.epochs} epochs, {base.noise} noise, seeds {seeds}:\n")
    print(format_table(summary))
    gaps = memorisation_gaps(summary)
    if gaps:
        print(f"\n{gaps}")
    diverged = sum(s["diverged"] for s in summary)
    if diverged:
        print(f"\n{diverged} of {len(rows)} runs DIVERGED (collapsed; counted in the means): see the 'diverged' "
              "column and each run's results.json")
    print(f"\nsummary: {out / 'summary.md'}, {out / 'summary.csv'}")
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    from curriculoss.harness.flagging import flag_run

    return flag_run(args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from curriculoss.harness.reproduce import (PRESETS, assemble, dataset_key, load_hparams, run_preset, save_hparams,
                                       tune_folder, tune_preset)

    if args.data_dir and not Path(args.data_dir).exists():
        raise SystemExit(f"curriculoss: error: --data-dir {args.data_dir}: no such file or directory")
    names = list(PRESETS) if args.name == "all" else [args.name]
    if args.tune:
        target = Path(args.hparams or Path(args.out) / "hparams.json")
        dataset = dataset_key(args.data_dir)
        for n in names:
            report, chosen = tune_preset(n, data_dir=args.data_dir, quick=args.quick, out=args.out,
                                         progress=not args.quiet, seeds=tuple(args.tune_seeds))
            if report is None:
                print(f"{n}: nothing to select; it borrows {PRESETS[n].borrow}")
                continue
            save_hparams(target, dataset, n, chosen)
            print(report.read_text())
        print(f"written: {target}")
        return 0
    hparams = load_hparams(args.hparams)
    reports = [run_preset(n, data_dir=args.data_dir, quick=args.quick, out=args.out, progress=not args.quiet,
                          hparams=hparams) for n in names]
    for report in reports:
        print(report.read_text())
    if args.name == "all":
        tuning = [tune_folder(args.out, n, args.quick) / "tuning.md" for n in names]
        assemble(reports, Path(args.docs), [t for t in tuning if t.exists()])
        print(f"written: {args.docs}")
    return 0


#: `run`'s options and the `bench` options they stand for.
_RUN_AS_BENCH = {"noise_rate": "noise_rates", "seed": "seeds"}


def cmd_run(args: argparse.Namespace) -> int:
    args.methods = ["ce", "superloss"]
    args.noise_rates = [args.noise_rate]
    args.seeds = [args.seed]
    args.given = {_RUN_AS_BENCH.get(dest, dest) for dest in args.given - {"method"}}
    return cmd_bench(args, default_out="runs/run")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, in the form of the command's other errors; `prefix` says
    where the options came from (a config file)."""

    def __init__(self, *args, prefix: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def error(self, message: str):
        self.exit(2, f"curriculoss: error: {self.prefix}{message} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or default is None or default == argparse.SUPPRESS:
            return text
        return f"{text} (default: {_shown(default).replace('%', '%%')})".lstrip()


def _shown(default) -> str:
    if default is False:
        return "off"
    return " ".join(map(str, default)) if isinstance(default, list) else str(default)


# ------------------------------------------------------------------------------------------ options from a file
#
# `--config FILE` (TOML, or YAML with PyYAML installed) holds the command's long options without their
# dashes, `noise-rate = 0.4` or `noise_rate = 0.4`; a switch is true or false, an option of several
# values a list (`seeds = [0, 1, 2]`, `milestones = [60, 120]`). The values become the command
# line's own tokens, placed before the options typed after the command, so those override the file and
# every value is checked as the option's own would be. Every run folder holds its options as
# `config.toml` (`curriculoss.harness.train.toml_text`), which `--config` reads back.

#: Options a file may not set: they say what to do with a folder, or name another file.
_NOT_IN_FILE = ("config", "resume", "overwrite", "help", "version")


def _fail(message: str):
    raise SystemExit(f"curriculoss: error: {message}")


def _read_options(path: str | os.PathLike) -> dict:
    """The table of a TOML (or, with PyYAML, YAML) file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        _fail(f"--config {path}: {exc.strerror or exc}")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _yaml(path, text)
    else:
        data = _toml(path, text)
    if not isinstance(data, dict):
        _fail(f"--config {path}: expected a table of options (key = value), got {type(data).__name__}")
    return data


def _toml(path: Path, text: bytes) -> dict:
    import tomllib

    try:
        return tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        _fail(f"--config {path}: not valid TOML ({exc})")


def _yaml(path: Path, text: bytes):
    try:
        import yaml
    except ImportError:
        _fail(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the file as TOML")
    try:
        return yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        _fail(f"--config {path}: not valid YAML ({' '.join(str(exc).split())})")


def _dest(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def _config_tokens(path: str | os.PathLike, parser: argparse.ArgumentParser) -> list[str]:
    """The command-line tokens of the options in the file at `path`, for the command of `parser`."""
    data = _read_options(path)
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in _NOT_IN_FILE}
    unknown = [k for k in data if _dest(str(k)) not in actions]
    if unknown:
        hint = "; config, resume and overwrite go on the command line" \
            if any(_dest(str(k)) in _NOT_IN_FILE for k in unknown) else ""
        _fail(f"--config {path}: unknown option(s) {', '.join(repr(k) for k in unknown)}; a key is a long option "
              f"of `{parser.prog}` without its dashes (e.g. noise-rate = 0.4){hint}")
    seen: dict[str, str] = {}
    tokens: list[str] = []
    for key, value in data.items():
        dest = _dest(key)
        if dest in seen:
            _fail(f"--config {path}: option {key!r} given twice (also as {seen[dest]!r})")
        seen[dest] = key
        tokens += _tokens(path, key, actions[dest], value)
    return tokens


def _tokens(path, key: str, action: argparse.Action, value) -> list[str]:
    option = max(action.option_strings, key=len)
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            _fail(f"--config {path}: {key}: expected true or false, got {value!r}")
        return [option] if value else []
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, (int, float, str))]
    if bad:
        _fail(f"--config {path}: {key}: expected a number or a string{' or a list of them' if action.nargs else ''}, "
              f"got {bad[0]!r}")
    texts = [repr(v) if isinstance(v, float) else str(v) for v in items]
    if action.nargs in ("+", "*"):
        return [option, *texts]
    if isinstance(value, list):  # --milestones 60,120 as [60, 120]
        return [f"{option}={','.join(texts)}"] if texts else []
    return [f"{option}={texts[0]}"]


def _with_config_file(argv: list[str], args: argparse.Namespace) -> list[str]:
    """`argv` with the options of `--config FILE` placed right after the command, where the options
    typed after it override them; the file's options are checked on their own first, so that an error
    in one names the file."""
    tokens = _config_tokens(args.config, build_parser().commands[args.command])
    in_file = build_parser(prefix=f"--config {args.config}: ").parse_args([args.command, *tokens])
    _check_file_model(args.config, getattr(in_file, "model", None), _given_options(argv))
    at = argv.index(args.command) + 1
    return [*argv[:at], *tokens, *argv[at:]]


def _check_file_model(path: str, model: str | None, given: set[str]) -> None:
    """A file is data: a model that is code (`package.module:factory`) is imported only when the command
    line names it (a run folder's `config.toml` may come from anyone)."""
    from curriculoss.harness.models import is_factory

    if model is not None and is_factory(model) and "model" not in given:
        raise SystemExit(f"curriculoss: error: --config {path}: its model {model!r} is code, which is never "
                         f"imported because a file names it; give --model {model} to import it from your Python path")


def _given_options(argv: list[str] | None) -> set[str]:
    """The options that the command line names (whatever their values), by argparse destination."""
    return set(vars(build_parser(defaults=False).parse_args(argv))) - {"command"}


def build_parser(defaults: bool = True, prefix: str = "") -> argparse.ArgumentParser:
    """The command line; `defaults=False` leaves out every option's default (to see which were given);
    `prefix` starts its error messages (the config file whose options it parses)."""
    parser = _Parser(prog="curriculoss", description=__doc__.split("\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, prefix=prefix)
    parser.add_argument("--version", action="version", version=f"curriculoss {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=functools.partial(_Parser, prefix=prefix))
    parser.commands = sub.choices

    p = sub.add_parser("run", help="quick demo: CE vs SuperLoss on digits with 40 %% symmetric noise",
                       formatter_class=_HelpFormatter)
    _add_common(p, grid=False)
    p.set_defaults(func=cmd_run, noise_rate=0.4)
    p = sub.add_parser("train", help="one training run into a run folder", formatter_class=_HelpFormatter)
    _add_common(p, grid=False)
    p.add_argument("--stop-on-divergence", action="store_true",
                   help="stop the run at the first epoch where it has collapsed (training loss not finite, or "
                        "training accuracy back at chance after being clearly above it), with exit status 3")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("bench", help="a grid of methods x noise rates x seeds, with a summary table and plot",
                       formatter_class=_HelpFormatter)
    _add_common(p, grid=True)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("flag", help="rank a run's training samples by how likely their label is wrong",
                       formatter_class=_HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished `curriculoss train` run folder, or the signals "
                   "folder or signals.npz (or its folder) written by curriculoss.recorder.Recorder in your own loop")
    p.add_argument("--score", choices=("aum", "loss", "superloss", "data-params", "imae"),
                   help="which signal ranks the samples (default: aum, the early-learning area under the margin)")
    p.add_argument("--window", help="epochs averaged: auto (the early-learning window; aum's default), all, "
                   "or a count / fraction of the last epochs (the other scores' default: 0.5)")
    p.add_argument("--num-issues", type=int, help="flag this many samples (default: estimated from the scores)")
    p.add_argument("--top", type=int, default=10, help="suspects to print (default 10)")
    p.set_defaults(func=cmd_flag)

    from curriculoss.harness.reproduce import PRESETS, TUNE_SEEDS

    p = sub.add_parser("reproduce", help="reproduce a paper's claim at reduced scale (3 seeds, table, plot, verdict)",
                       formatter_class=_HelpFormatter)
    p.add_argument("name", choices=[*PRESETS, "all"], metavar="NAME", help=f"one of: {', '.join(PRESETS)}, all")
    p.add_argument("--quick", action="store_true", help="fewer epochs and noise rates: minutes, not the full preset")
    p.add_argument("--data-dir", help="MNIST as IDX files (LeNet-5, 10,000 training samples); default: digits (MLP)")
    p.add_argument("--out", default="runs/reproduce", help="where the presets' run folders go (default runs/reproduce)")
    p.add_argument("--docs", default="docs/reproduction.md", help="report written by NAME=all")
    p.add_argument("--tune", action="store_true",
                   help="select the preset's hyper-parameters on a validation split of the training set (never "
                        "the test set) and write them to --hparams; trains nothing else")
    p.add_argument("--tune-seeds", type=int, nargs="+", default=list(TUNE_SEEDS),
                   help="seeds of the selection runs, averaged (default 100 101; the reproduction uses 0 1 2)")
    p.add_argument("--hparams", help="JSON of selected hyper-parameters: read by a run (default: the selections "
                                     "shipped with curriculoss), written by --tune (default OUT/hparams.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)
    if not defaults:
        for command in sub.choices.values():
            for action in command._actions:
                action.default = argparse.SUPPRESS
            command._defaults.clear()
    return parser


def main(argv: list[str] | None = None) -> int:
    from curriculoss.harness.runlock import RunFolderInUse
    from curriculoss.harness.train import CheckpointError

    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        if getattr(args, "config", None):
            argv = _with_config_file(argv, args)
            args = build_parser().parse_args(argv)
        args.given = _given_options(argv)
        try:
            code = args.func(args)
        except (ValueError, FileNotFoundError, CheckpointError, RunFolderInUse) as exc:
            print(f"curriculoss: error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            raise
        except OSError as exc:  # --out naming a file, a read-only folder, a full disk: the path and why
            where = exc.filename if exc.filename is not None else "?"
            print(f"curriculoss: error: {where}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader of our output went away (`curriculoss ... | head -1`): exit quietly, as a
    filter does. stdout is pointed at /dev/null so that the interpreter's final flush cannot raise
    again; the status is that of a process ended by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + 13
