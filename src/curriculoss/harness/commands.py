"""What the commands `train`, `run`, `bench` and `reproduce` do with their options.

Each checks the options that argparse cannot check one by one (the data and noise files, the run or
grid folder, what a `--resume` may change), builds the configuration (`build_config`) and runs it:
`train` one run folder (`curriculoss.harness.train`), `bench` and `run` a grid
(`curriculoss.harness.bench`), `reproduce` a paper's presets (`curriculoss.harness.reproduce`).
Errors leave with `SystemExit("curriculoss: error: ...")`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from curriculoss.harness.arguments import FIELD_OF, build_config, config_fields

__all__ = ["cmd_train", "cmd_run", "cmd_bench", "cmd_reproduce", "read_config"]


def _read_json(path: Path, what: str):
    """A JSON file the CLI wrote itself; a damaged one is an error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"curriculoss: error: {path}: not a readable {what} ({exc}); the file is damaged") from None


def read_config(path: Path):
    """The checked configuration in a run's `args.json` (or a grid's `grid.json`); errors name the file."""
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
    from curriculoss.harness.data import EXPECTED

    if args.dataset != "digits" and not args.data_dir:
        raise SystemExit(f"curriculoss: error: --data-dir is required for --dataset {args.dataset}")
    if args.data_dir and not Path(args.data_dir).exists():
        raise SystemExit(f"curriculoss: error: --data-dir {args.data_dir}: no such file or directory")
    if args.data_dir:
        _refuse_special("--data-dir", args.data_dir, EXPECTED.get(args.dataset, "a file or a directory"))
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

    from curriculoss.harness.data import file_kind

    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode))):
        raise SystemExit(f"curriculoss: error: {option} {path}: {file_kind(mode)}, not a regular file"
                         f"{' or a directory' if directory else ''} (expected {expected})")


#: Options that are not part of what a run trains.
_NOT_CONFIG = {"out", "resume", "overwrite", "quiet", "stop_on_divergence", "config"}
#: What a resume may change: where the run trains and, for a run (not a grid), more epochs.
_RESUME_MAY_CHANGE = ("device", "compile", "stream", "workers")


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given_fields(args: argparse.Namespace, values: dict) -> dict:
    """The configuration fields that the command line's options set: field -> (option, value)."""
    fields = {}
    for dest in args.given - _NOT_CONFIG:
        field = FIELD_OF.get(dest, dest)
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


def _resumed_file(args: argparse.Namespace, name: str, what: str) -> Path:
    """The file `name` in the folder of `--resume` (which `--out`, if given, must name too)."""
    folder = Path(args.resume)
    if args.out and Path(args.out) != folder:
        raise SystemExit(f"curriculoss: error: --out {args.out} and --resume {folder} name different folders")
    if not (folder / name).exists():
        raise SystemExit(f"curriculoss: error: --resume {folder}: no {name} there (not a {what} folder)")
    return folder / name


def _resume_config(args: argparse.Namespace):
    """The run folder and configuration of `train --resume`: the recorded one, with the changes allowed."""
    run_dir = _resumed_file(args, "args.json", "run").parent
    recorded = read_config(run_dir / "args.json")
    wanted = _given_fields(args, config_fields(build_config(args, args.method, args.noise_rate, args.seed)))
    found = _differences(config_fields(recorded), wanted, ("epochs", *_RESUME_MAY_CHANGE), "the run's")
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
        cfg = build_config(args, args.method, args.noise_rate, args.seed)
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
    given = _given_fields(args, config_fields(cfg))
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
    base = read_config(spec)
    try:
        methods, rates, seeds = (_unique(f"{spec} {key}", saved[key]) for key in ("methods", "noise_rates", "seeds"))
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"curriculoss: error: {spec}: not a curriculoss grid specification (no {exc})") from None
    return base, methods, rates, seeds


def _grid_fields(base, methods: list, rates: list, seeds: list) -> dict:
    return {**config_fields(base), "methods": methods, "noise_rates": rates, "seeds": seeds}


def _resume_grid(args: argparse.Namespace):
    """`bench --resume`: the recorded grid, with the changes allowed."""
    spec = _resumed_file(args, "grid.json", "bench")
    out = spec.parent
    base, methods, rates, seeds = _read_grid(spec)
    distinct = (list(dict.fromkeys(v)) for v in (args.methods, args.noise_rates, args.seeds))
    wanted = _given_fields(args, _grid_fields(build_config(args), *distinct))
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
    from curriculoss.harness.holdout import check_holdout
    from curriculoss.harness.models import is_factory
    from curriculoss.harness.train import build_checked_model, prepare_data

    _check_new_run(args)
    out = Path(args.out or default_out)
    base = build_config(args)
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
    if base.holdout > 0:
        check_holdout(base, data)
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
