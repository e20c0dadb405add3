"""`curriculoss flag`: rank a run's training samples by how likely their label is wrong.

The signals are read where the run left them: a signals folder (`signals/`, written epoch by epoch by
a streaming `curriculoss.recorder.Recorder`), whose tables are read in blocks, or an older
`signals.npz`, read member by member. The scores, the early-learning window, the count estimate and
the ranking come from `curriculoss.flag`; this module prints the suspects and writes `suspects.csv`,
`flag.json` (with a known noise mask) and the plots next to the signals.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from curriculoss import flag
from curriculoss.signals import is_signals_folder, open_signals

__all__ = ["cmd_flag", "PLOT_SAMPLES"]

#: Above this many samples the plots of the signals over the epochs show an evenly spread subset of them.
PLOT_SAMPLES = 200_000


def cmd_flag(args: argparse.Namespace) -> int:
    """`curriculoss flag RUN_DIR`: rank, print, and write the suspects next to the signals."""
    from curriculoss.harness.commands import read_config

    source, out_dir, is_run = _locate(Path(args.run_dir))
    cfg = None
    if is_run and (out_dir / "args.json").exists():
        cfg = read_config(out_dir / "args.json")
        if cfg.task != "classification":
            raise SystemExit("curriculoss: error: flag ranks classification labels; this run is a regression")
    _check_score(args.score, cfg, Path(args.run_dir))
    window = _parse_window(args.window)
    with _open(source, cfg) as signals:
        ranking = _rank(args, signals, source, cfg, window)
        predicted = _flag_predictions(out_dir, cfg, signals)
        plotted = _plot_tables(signals, ranking["method"], ranking["noise_mask"])  # read before anything is written
    _write_flag(args, out_dir, Path(args.run_dir), ranking, predicted, plotted)
    return 0


def _locate(target: Path) -> tuple[Path, Path, bool]:
    """The signals (a folder or a `.npz`), the folder the results go to, and whether that is a run folder."""
    if target.suffix == ".npz":
        source, out_dir, is_run = target, target.parent, False
    elif is_signals_folder(target):
        source, out_dir, is_run = target, target.parent, False
    elif is_signals_folder(target / "signals"):
        source, out_dir, is_run = target / "signals", target, True
    else:
        source, out_dir, is_run = target / "signals.npz", target, True
    if not source.exists():
        raise SystemExit(f"curriculoss: error: RUN_DIR {target}: no signals there (a finished `curriculoss train` run "
                         "folder, or a signals folder, a signals.npz or its folder written by "
                         "curriculoss.recorder.Recorder, is needed)")
    return source, out_dir, is_run


def _open_folder(path: Path, epochs: int | None):
    """A signals folder's arrays, checked: integer labels, no more epochs than the run has."""
    try:
        signals = open_signals(path)
    except ValueError as exc:
        raise SystemExit(f"curriculoss: error: {exc}") from None
    if signals["labels"].dtype.kind not in "iu":
        raise SystemExit(f"curriculoss: error: {path}: labels.npy holds {signals['labels'].dtype} values; flag "
                         "ranks classification labels (integers), not a regression's targets")
    held = {len(t) for t in signals.values() if getattr(t, "ndim", 1) == 2}
    if epochs is not None and held and max(held) > epochs:
        raise SystemExit(f"curriculoss: error: {path}: the tables hold {max(held)} epochs; the run (args.json) "
                         f"has {epochs}")
    return signals


def _open(source: Path, cfg):
    """The signals at `source`, their layout checked (a damaged file is a one-line error naming it)."""
    if source.suffix != ".npz":  # (a context manager, as the .npz reader is)
        return contextlib.nullcontext(_open_folder(source, cfg.epochs if cfg else None))
    from curriculoss.harness.data.signals import open_signals as open_npz

    return open_npz(source, epochs=cfg.epochs if cfg else None)


def _rank(args: argparse.Namespace, signals, path: Path, cfg, window) -> dict:
    """The scores of the samples, their order, the flagged ones, and the arrays the report prints."""
    try:
        method = args.score or flag.default_score(cfg.method if cfg else "ce")
        rows = flag.run_window(signals, method, *(() if window is None else (window,)))
        method, scores = flag.run_scores(signals, method, window=rows)
        filled = np.where(np.isnan(scores), 1.0, scores)
        flagged = flag.find_label_issues(filled, num_issues=args.num_issues, score=method)
    except ValueError as exc:
        raise SystemExit(f"curriculoss: error: {path}: {exc}") from None
    labels = np.asarray(signals["labels"])
    epochs = len(signals[flag.SIGNAL_OF[method]])
    auto = (window or flag.DEFAULT_WINDOW[method]) == "auto"
    return {"method": method, "scores": filled, "flagged": flagged, "labels": labels,
            "order": np.argsort(filled, kind="stable"),
            "noise_mask": np.asarray(signals.get("noise_mask", np.zeros(len(labels), bool)), bool),
            "where": f", epochs 1-{rows.stop} of {epochs}" if auto else ""}


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


def _write_flag(args: argparse.Namespace, out_dir: Path, target: Path, ranking: dict, predicted, plotted) -> None:
    method, filled, flagged, labels, order = (ranking[k] for k in ("method", "scores", "flagged", "labels", "order"))
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    with open(out_dir / "suspects.csv", "w") as fh:
        fh.write("index,given_label,predicted_label,score,rank,flagged\n")
        for i in order:
            fh.write(f"{i},{labels[i]},{predicted[i]},{filled[i]:.6g},{rank[i]},{int(flagged[i])}\n")
    print(f"{target}: {len(filled)} samples scored by {method!r} ({flag.SCORE_METHODS[method]}{ranking['where']})")
    count = int(flagged.sum())
    print(f"{count} of {len(filled)} ({100 * count / len(filled):.1f} %) flagged as likely label issues; "
          f"top {min(args.top, len(order))} suspects:")
    print("  index  given  predicted   score")
    for i in order[:args.top]:
        print(f"  {i:5d}  {labels[i]:5d}  {predicted[i]:9d}  {filled[i]:.4f}")
    if ranking["noise_mask"].any():
        _print_evaluation(out_dir, filled, ranking["noise_mask"], method)
    _flag_plots(out_dir, plotted, filled, method, ranking["noise_mask"])
    print(f"\nwritten: {out_dir / 'suspects.csv'}")


def _print_evaluation(out_dir: Path, scores, noise_mask, method: str) -> None:
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
    from curriculoss.harness.checkpoint import CheckpointError, load_checkpoint
    from curriculoss.harness.epoch import stream_loader
    from curriculoss.harness.holdout import split_holdout
    from curriculoss.harness.train import prepare_data

    data, noisy = prepare_data(cfg)  # an imagefolder set too large for memory streams, as in training
    if cfg.holdout > 0:  # the samples trained on, as the signals index them
        data = split_holdout(cfg, data, noisy)[0]
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
        batches = stream_loader(x, cfg.workers, torch.device("cpu"),
                                 [list(range(i, min(i + 1024, n))) for i in range(0, n, 1024)])
    with torch.no_grad():
        return torch.cat([model(xb).argmax(1) for xb in batches]).numpy()


#: The table each score's plot of the signals over the epochs shows.
_PLOTTED = {"aum": "margin", "superloss": "confidence", "data-params": "confidence"}


def _plot_tables(signals, method: str, noise_mask: np.ndarray) -> dict:
    """The tables the plots show (`loss` for the groups, and the score's) and the noise mask, for at most
    `PLOT_SAMPLES` samples: 64 evenly spread runs of neighbouring samples (cheap to read from a table)."""
    n = len(noise_mask)
    columns = np.arange(n)
    if n > PLOT_SAMPLES:
        starts = np.linspace(0, n - PLOT_SAMPLES // 64, 64).astype(np.int64)
        columns = (starts[:, None] + np.arange(PLOT_SAMPLES // 64)[None]).ravel()
    keys = [key for key in ("loss", _PLOTTED.get(method, "loss")) if key in signals]
    picked = slice(None) if n <= PLOT_SAMPLES else columns
    tables = {key: np.asarray(signals[key][:, picked] if np.ndim(signals[key]) == 2 else signals[key]) for key in keys}
    return {**tables, "noise_mask": noise_mask[columns]}


def _flag_plots(run_dir: Path, tables: dict, scores, method: str, noise_mask) -> None:
    """`signals.png` (the score's signal over the epochs by group, on `_plot_tables`' samples) and
    `scores.png` (the histogram of every score); nothing without matplotlib."""
    from curriculoss.harness import plots

    shown = tables.get(_PLOTTED.get(method, "loss"))
    if "loss" in tables and shown is not None:
        plots.save_figure(run_dir / "signals.png", _signals_figure, tables, shown, method)
    plots.save_figure(run_dir / "scores.png", plots.score_histogram, scores, noise_mask)


def _signals_figure(tables: dict, shown, method: str):
    from curriculoss.harness import plots

    if method == "data-params":
        return plots.data_parameters_by_group(shown, tables["noise_mask"])
    groups = plots.sample_groups(tables["loss"], tables["noise_mask"])
    ylabel = {"aum": "margin z_y - max other z", "superloss": "confidence sigma*"}.get(method, "per-sample loss")
    return plots.confidence_by_group(shown, groups, ylabel=ylabel)
