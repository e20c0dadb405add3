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
import json
import os
import sys
from pathlib import Path

from curriculoss import __version__
from curriculoss.harness.arguments import add_run_options
from curriculoss.harness.commands import cmd_bench, cmd_reproduce, cmd_run, cmd_train
from curriculoss.harness.commands import read_config as _read_config  # the name the flag command reads
from curriculoss.harness.configfile import given_options, with_config_file


def _parse_window(text: str | None):
    if text is None:
        return None
    if text in ("auto", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"curriculoss: error: --window {text!r}: expected auto, all, a count or a fraction of the last epochs")
    return value


def cmd_flag(args: argparse.Namespace) -> int:
    from curriculoss.harness.data.signals import open_signals

    target = Path(args.run_dir)
    run_dir = target.parent if target.suffix == ".npz" else target
    signals_path = target if target.suffix == ".npz" else target / "signals.npz"
    if not signals_path.exists():
        raise SystemExit(f"curriculoss: error: RUN_DIR {target}: no signals.npz there (a finished `curriculoss train` "
                         "run folder, or a folder / file written by curriculoss.recorder.Recorder.save, is needed)")
    cfg = None
    if (run_dir / "args.json").exists() and target.suffix != ".npz":
        cfg = _read_config(run_dir / "args.json")
        if cfg.task != "classification":
            raise SystemExit("curriculoss: error: flag ranks classification labels; this run is a regression")
    _check_score(args.score, cfg, target)
    window = _parse_window(args.window)
    with open_signals(signals_path, epochs=cfg.epochs if cfg else None) as signals:
        ranking = _rank(args, signals, signals_path, cfg, window)
        predicted = _flag_predictions(run_dir, cfg, signals)
        plotted = _plot_tables(signals, ranking["method"])  # read before anything is written
    _write_flag(args, run_dir, target, ranking, predicted, plotted)
    return 0


def _rank(args: argparse.Namespace, signals, path: Path, cfg, window) -> dict:
    """The scores of the samples, their order, the flagged ones, and the arrays the report prints."""
    import numpy as np

    from curriculoss import flag

    try:
        method, scores = flag.run_scores(signals, args.score, method=cfg.method if cfg else None,
                                         **({} if window is None else {"window": window}))
        filled = np.where(np.isnan(scores), 1.0, scores)
        flagged = flag.find_label_issues(filled, num_issues=args.num_issues, score=method)
    except ValueError as exc:
        raise SystemExit(f"curriculoss: error: {path}: {exc}") from None
    labels = signals["labels"]
    auto = (window or flag.DEFAULT_WINDOW[method]) == "auto"
    return {"method": method, "scores": filled, "flagged": flagged, "labels": labels,
            "order": np.argsort(filled, kind="stable"),
            "noise_mask": np.asarray(signals.get("noise_mask", np.zeros(len(labels), bool)), bool),
            "where": f", epochs 1-{flag.select_epochs(signals['margin'])} of {len(signals['margin'])}" if auto else ""}


def _write_flag(args: argparse.Namespace, out_dir: Path, target: Path, ranking: dict, predicted, plotted) -> None:
    import numpy as np

    from curriculoss import flag

    method, filled, flagged, labels, order = (ranking[k] for k in ("method", "scores", "flagged", "labels", "order"))
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    with open(out_dir / "suspects.csv", "w") as fh:
        fh.write("index,given_label,predicted_label,score,rank,flagged\n")
        for i in order:
            fh.write(f"{i},{labels[i]},{predicted[i]},{filled[i]:.6g},{rank[i]},{int(flagged[i])}\n")
    print(f"{target}: {len(filled)} samples scored by {method!r} ({flag.SCORE_METHODS[method]}{ranking['where']})")
    print(f"{int(flagged.sum())} flagged as likely label issues; top {min(args.top, len(order))} suspects:")
    print("  index  given  predicted   score")
    for i in order[:args.top]:
        print(f"  {i:5d}  {labels[i]:5d}  {predicted[i]:9d}  {filled[i]:.4f}")
    if ranking["noise_mask"].any():
        _print_evaluation(out_dir, filled, ranking["noise_mask"], method)
    _flag_plots(out_dir, plotted, filled, method, ranking["noise_mask"])
    print(f"\nwritten: {out_dir / 'suspects.csv'}")


def _print_evaluation(out_dir: Path, scores, noise_mask, method: str) -> None:
    from curriculoss import flag

    figures = flag.evaluate(scores, noise_mask, score=method)
    print("\nagainst the run's known noise mask:")
    for key in ("auroc", "average_precision", "precision_at_k", "estimated_num_issues", "num_noisy",
                "precision_at_estimate", "recall_at_estimate"):
        count = key.startswith(("num", "est"))
        print(f"  {key:22s} {int(figures[key])}" if count else f"  {key:22s} {figures[key]:.4f}")
    (out_dir / "flag.json").write_text(json.dumps({"score": method, **figures}, indent=2) + "\n")


#: The scores that read a method's own confidence or loss: for a run of that method only.
_METHOD_SCORES = ("superloss", "data-params", "imae")


def _check_score(score: str | None, cfg, target: Path) -> None:
    if score in _METHOD_SCORES and cfg is not None and cfg.method != score:
        raise SystemExit(f"curriculoss: error: argument --score: {score!r} reads the signal of a {score} run; "
                         f"{target} was trained with {cfg.method} (aum and loss fit any run)")


def _flag_predictions(run_dir: Path, cfg, signals: dict):
    """Each training sample's predicted class: the final model's for a built-in model, else (the run's model
    is user code, which is never imported because a folder names it) the one recorded in the last epoch."""
    import numpy as np

    from curriculoss.harness.models import is_factory

    recorded = signals.get("predicted", np.full(len(signals["labels"]), -1))
    if cfg is None or not (run_dir / "checkpoint.pt").exists():
        return recorded
    if is_factory(cfg.model):
        print(f"curriculoss: note: predicted_label is the last epoch's: the run's model {cfg.model!r} is code, "
              "which flag never imports", file=sys.stderr)
        return recorded
    predicted = _predictions(run_dir, cfg)
    if len(predicted) != len(signals["labels"]):
        print(f"curriculoss: note: predicted_label is the last epoch's: the run's data set now has {len(predicted)} "
              f"training samples, its signals {len(signals['labels'])}", file=sys.stderr)
        return recorded
    return predicted


def _predictions(run_dir: Path, cfg):
    """The final model's predicted class of every training sample (a built-in model only)."""
    import torch

    from curriculoss.harness.models import build_model
    import numpy as np

    from curriculoss.harness.train import CheckpointError, _stream_loader, load_checkpoint, prepare_data

    data, _ = prepare_data(cfg)  # an imagefolder set too large for memory streams, as in training
    model = build_model(cfg.model, tuple(data.input_shape), data.num_classes, allow_import=False)
    path = run_dir / "checkpoint.pt"
    try:
        model.load_state_dict(load_checkpoint(path)["model"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: field model does not fit the run's {cfg.model!r} "
                              f"({str(exc).strip().splitlines()[0]})") from None
    model.eval()
    x, n = data.x_train, len(data.x_train)
    if isinstance(x, np.ndarray):
        batches = (torch.from_numpy(x[i:i + 1024]) for i in range(0, n, 1024))
    else:
        batches = _stream_loader(x, cfg.workers, torch.device("cpu"),
                                 [list(range(i, min(i + 1024, n))) for i in range(0, n, 1024)])
    with torch.no_grad():
        return torch.cat([model(xb).argmax(1) for xb in batches]).numpy()


#: The table each score's plot of the signals over the epochs shows.
_PLOTTED = {"aum": "margin", "superloss": "confidence", "data-params": "confidence"}


def _plot_tables(signals, method: str) -> dict:
    """The tables the plots show (`loss` for the groups, and the score's), those the file holds."""
    return {key: signals[key] for key in ("loss", _PLOTTED.get(method, "loss")) if key in signals}


def _flag_plots(run_dir: Path, tables: dict, scores, method: str, noise_mask) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curriculoss.harness import plots

    shown = tables.get(_PLOTTED.get(method, "loss"))
    if "loss" in tables and shown is not None:
        groups = plots.sample_groups(tables["loss"], noise_mask)
        if method == "aum":
            fig = plots.confidence_by_group(shown, groups, ylabel="margin z_y - max other z")
        elif method == "superloss":
            fig = plots.confidence_by_group(shown, groups)
        elif method == "data-params":
            fig = plots.data_parameters_by_group(shown, noise_mask)
        else:
            fig = plots.confidence_by_group(shown, groups, ylabel="per-sample loss")
        fig.savefig(run_dir / "signals.png", dpi=100)
        plt.close(fig)
    fig = plots.score_histogram(scores, noise_mask)
    fig.savefig(run_dir / "scores.png", dpi=100)
    plt.close(fig)



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
    add_run_options(p, grid=False)
    p.set_defaults(func=cmd_run, noise_rate=0.4)
    p = sub.add_parser("train", help="one training run into a run folder", formatter_class=_HelpFormatter)
    add_run_options(p, grid=False)
    p.add_argument("--stop-on-divergence", action="store_true",
                   help="stop the run at the first epoch where it has collapsed (training loss not finite, or "
                        "training accuracy back at chance after being clearly above it), with exit status 3")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("bench", help="a grid of methods x noise rates x seeds, with a summary table and plot",
                       formatter_class=_HelpFormatter)
    add_run_options(p, grid=True)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("flag", help="rank a run's training samples by how likely their label is wrong",
                       formatter_class=_HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished `curriculoss train` run folder, or a signals.npz "
                   "(or its folder) written by curriculoss.recorder.Recorder in your own loop")
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
            argv = with_config_file(argv, args, build_parser)
            args = build_parser().parse_args(argv)
        args.given = given_options(argv, build_parser)
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
