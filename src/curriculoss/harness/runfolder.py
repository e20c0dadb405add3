"""A run folder's files: which they are, who may write them, and how each is written (atomically).

See `curriculoss.harness.train` for what each file holds.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from curriculoss.harness.config import TrainConfig, toml_text
from curriculoss.harness.methods import EPOCH_COLUMNS
from curriculoss.harness.models import one_line

__all__ = ["RunFolderExists", "RUN_FILES", "METRIC_COLUMNS", "HOLDOUT_COLUMN", "HOLDOUT_FILE", "run_files_in",
           "clear_run_folder", "claim_folder", "atomic_write", "write_json", "write_config", "write_metrics"]


class RunFolderExists(ValueError):
    """A new run was asked for in a folder that holds a run (or a bench grid) already."""


#: The held-out positions in the training set of a run with a hold-out split (`curriculoss.harness.holdout`).
HOLDOUT_FILE = "holdout_index.npy"
#: The files a run writes into its folder; with `curriculoss flag`'s, what `overwrite=True` removes.
RUN_FILES = ("args.json", "config.toml", "metrics.csv", "signals", "signals.npz", "results.json", "checkpoint.pt",
             "resumes.json", "curves.png", HOLDOUT_FILE)
FLAG_FILES = ("suspects.csv", "flag.json", "signals.png", "scores.png")


def run_files_in(run_dir: str | Path) -> list[str]:
    """The run files that `run_dir` holds (none: it holds no run)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def clear_run_folder(run_dir: str | Path) -> None:
    """Remove a run's files (and `curriculoss flag`'s) from `run_dir`; any other file stays."""
    for name in (*RUN_FILES, *FLAG_FILES):
        for path in (Path(run_dir) / name, Path(run_dir) / (name + ".tmp")):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def claim_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a bench folder, and a new run in a folder holding one unless it is to be overwritten."""
    if (run_dir / "grid.json").exists():
        raise RunFolderExists(f"{run_dir} is a bench folder (grid.json), not a run folder; choose another --out")
    held = run_files_in(run_dir)
    if held and not (resume or overwrite):
        raise RunFolderExists(f"{run_dir} holds a run already ({', '.join(held)}); continue it with --resume "
                              f"{run_dir}, or give --overwrite to replace it")


METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc_noisy", "train_acc_true", "test_metric", "method_stat", "seconds",
                  "train_acc_peak", *EPOCH_COLUMNS)
#: The column a run with a hold-out split adds (`curriculoss.harness.holdout`), after the others.
HOLDOUT_COLUMN = "holdout_metric"


def atomic_write(path: Path, write) -> None:
    """Write `path` through `path.tmp`, renamed over it once complete. When writing fails (a full disk)
    the partial `.tmp` is removed, `path` is left as it was, and the error names `path`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, (OSError, RuntimeError)) or (isinstance(exc, OSError) and exc.filename):
            raise
        # torch.save reports a failed write as a RuntimeError; either way, name the file in one line
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise OSError(getattr(exc, "errno", None), f"{why} (writing it failed: the partial {tmp.name} was "
                      f"removed, {path.name} is as it was before)", str(path)) from exc


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON in `path`, written atomically."""
    atomic_write(path, lambda fh: fh.write((json.dumps(value, indent=2) + "\n").encode()))


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """`args.json` (the configuration) and `config.toml` (the same, as options of `curriculoss train
    --config`)."""
    write_json(run_dir / "args.json", cfg.to_json())
    atomic_write(run_dir / "config.toml", lambda fh: fh.write(toml_text(cfg).encode()))


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    """`metrics.csv`: one row of `METRIC_COLUMNS` per epoch so far (and `HOLDOUT_COLUMN` when the rows
    hold it)."""
    columns = METRIC_COLUMNS + ((HOLDOUT_COLUMN,) if history and HOLDOUT_COLUMN in history[0] else ())

    def write(fh):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        fh.write(text.getvalue().encode())
    atomic_write(run_dir / "metrics.csv", write)
