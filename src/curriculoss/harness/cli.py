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
import os
import sys

from curriculoss import __version__
from curriculoss.harness.arguments import add_run_options
from curriculoss.harness.commands import cmd_bench, cmd_reproduce, cmd_run, cmd_train
from curriculoss.harness.configfile import given_options, with_config_file
from curriculoss.harness.flagging import cmd_flag

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
