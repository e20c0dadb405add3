"""Run and grid folders are data: reading one never imports what it names; a finished run or grid is never
replaced silently, a resume changes only what it may and records it; small command-line errors are one line."""
import contextlib
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculoss.harness import reproduce
from curriculoss.harness.cli import main
from curriculoss.harness.runlock import run_folder_lock
from curriculoss.signals import open_signals

from _helpers import one_line_error as _error

TINY = ["--limit", "64", "--epochs", "2", "--batch-size", "32", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CURRICULOSS = str(Path(sys.executable).with_name("curriculoss"))

PAYLOAD = '''
import pathlib
pathlib.Path({marker!r}).write_text("the run folder's code ran")
import torch.nn as nn


def f(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch CE run and a finished one-cell grid, copied by each test that changes them."""
    root = tmp_path_factory.mktemp("finished")
    assert main(["train", *TINY, "--noise-rate", "0.2", "--out", str(root / "run")]) == 0
    assert main(["bench", *TINY, "--epochs", "1", "--methods", "ce", "--noise-rates", "0.2", "--seeds", "0",
                 "--out", str(root / "grid")]) == 0
    return root


def _copy(finished, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished / name, tmp_path / name))


def _set_model(path: Path, model: str, key=None) -> None:
    data = json.loads(path.read_text())
    (data[key] if key else data)["model"] = model
    path.write_text(json.dumps(data))


def _poison(folder: Path, marker: Path) -> None:
    """A received folder: its configuration names a module of its own, which writes ``marker`` if imported."""
    (folder / "pwn_mod.py").write_text(PAYLOAD.format(marker=str(marker)))
    if (folder / "grid.json").exists():
        _set_model(folder / "grid.json", "pwn_mod:f", "base")
        cell = folder / "ce" / "rate0.2" / "seed0"
        _set_model(cell / "args.json", "pwn_mod:f")
        (cell / "results.json").unlink()  # an interrupted grid: its cell would be trained on
    else:
        _set_model(folder / "args.json", "pwn_mod:f")


@pytest.fixture
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop("pwn_mod", None)


# -------------------------------------------------------------------------------- a folder never runs code

@pytest.mark.parametrize("inside", [True, False], ids=["inside", "outside"])
@pytest.mark.parametrize("command", ["flag", "train", "bench"])
def test_a_folder_never_gets_its_code_imported(finished, tmp_path, monkeypatch, capsys, clean_imports, command,
                                               inside):
    folder = _copy(finished, "grid" if command == "bench" else "run", tmp_path)
    marker = tmp_path / "MARKER"
    _poison(folder, marker)
    if inside:  # `cd RUN && python -m curriculoss ...`: the folder is even on sys.path
        monkeypatch.chdir(folder)
        monkeypatch.syspath_prepend(str(folder))
    target = "." if inside else str(folder)
    argv = {"flag": ["flag", target], "train": ["train", "--resume", target, "--quiet"],
            "bench": ["bench", "--resume", target, "--quiet"]}[command]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        assert not marker.exists(), "reading the folder ran its code"
    if command == "flag":
        assert code == 0 and (folder / "suspects.csv").exists()
        assert "predicted_label is the last epoch's" in capsys.readouterr().err
    else:
        assert code.startswith(f"curriculoss: error: --resume {target}: its model 'pwn_mod:f' is code")
        assert code.endswith("give --model pwn_mod:f to import it from your Python path")
    assert "pwn_mod" not in sys.modules


@pytest.mark.skipif(not Path(CURRICULOSS).exists(), reason="no curriculoss console script next to this Python")
def test_console_script_inside_a_received_folder(finished, tmp_path):
    folder = _copy(finished, "run", tmp_path)
    marker = tmp_path / "MARKER"
    _poison(folder, marker)
    proc = subprocess.run([CURRICULOSS, "flag", "."], cwd=folder, capture_output=True, text=True, env=ENV, timeout=300)
    assert not marker.exists(), "reading the folder ran its code"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (folder / "suspects.csv").exists()


FACTORY = '''
import torch.nn as nn


def make_net(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''


def test_a_users_model_resumes_when_named_again(tmp_path, monkeypatch, capsys, clean_imports):
    (tmp_path / "mynets_rf.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--model", "mynets_rf:make_net", "--out", str(run)]) == 0
    with pytest.raises(SystemExit, match="give --model mynets_rf:make_net"):
        main(["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    with pytest.raises(SystemExit, match=r"--model \(model 'mlp', the run's 'mynets_rf:make_net'\)"):
        main(["train", "--resume", str(run), "--model", "mlp", "--quiet"])
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--model", "mynets_rf:make_net", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    sys.modules.pop("mynets_rf", None)


def test_build_model_never_searches_the_working_directory(tmp_path, monkeypatch, clean_imports):
    from curriculoss.harness.models import build_model

    marker = tmp_path / "MARKER"
    (tmp_path / "pwn_mod.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    path = [p for p in sys.path if p not in ("", ".", str(tmp_path))]
    monkeypatch.setattr(sys, "path", path)
    with pytest.raises(ValueError, match="cannot import 'pwn_mod'"):
        build_model("pwn_mod:f", (64,), 10)
    with pytest.raises(ValueError, match="user code"):
        build_model("pwn_mod:f", (64,), 10, allow_import=False)
    assert sys.path == path and not marker.exists()


# ------------------------------------------------------------------------- a finished run is not replaced

def _stamps(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_train_out_on_a_run_refuses_and_overwrite_replaces(finished, tmp_path, capsys):
    run = _copy(finished, "run", tmp_path)
    (run / "suspects.csv").write_text("index\n")
    (run / "notes.txt").write_text("mine")
    before = _stamps(run)
    assert main(["train", *TINY, "--method", "superloss", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"curriculoss: error: {run} holds a run already (args.json") and err.count("\n") == 1
    assert f"--resume {run}" in err and "--overwrite" in err
    assert _stamps(run) == before
    assert main(["train", *TINY, "--epochs", "1", "--method", "superloss", "--overwrite", "--out", str(run)]) == 0
    assert json.loads((run / "args.json").read_text())["method"] == "superloss"
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 1
    assert not (run / "suspects.csv").exists() and (run / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "--overwrite"])
    assert "not allowed with argument --resume" in capsys.readouterr().err


def test_resume_with_other_options_refuses_and_lists_them(finished, tmp_path, capsys):
    run = _copy(finished, "run", tmp_path)
    before = _stamps(run)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(run), "--method", "superloss", "--epochs", "5", "--lr", "0.5", "--quiet"])
    message = str(exc.value)
    assert message.startswith(f"curriculoss: error: --resume {run}: options differ") and "\n" not in message
    assert "--method (method 'superloss', the run's 'ce')" in message and "--lr (lr 0.5, the run's 0.03)" in message
    assert "--epochs" not in message.split("; a resume")[0]  # more epochs may change
    with pytest.raises(SystemExit, match=r"--epochs \(epochs 1, the run's 2\)"):
        main(["train", "--resume", str(run), "--epochs", "1", "--quiet"])
    assert _stamps(run) == before
    # the run's own values, given again, are no difference
    assert main(["train", "--resume", str(run), "--method", "ce", "--noise-rate", "0.2", "--quiet"]) == 0
    assert not (run / "resumes.json").exists()


def test_resume_with_more_epochs_and_another_device_is_recorded(finished, tmp_path):
    run = _copy(finished, "run", tmp_path)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # epoch 3 follows the 3-epoch cosine schedule (the finished run's rate had reached 0)
    assert float(rows[2]["lr"]) == pytest.approx(0.03 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))
    assert json.loads((run / "args.json").read_text())["epochs"] == 3
    assert json.loads((run / "results.json").read_text())["epochs"] == 3
    assert json.loads((run / "resumes.json").read_text()) == [
        {"epoch": 2, "changed": {"epochs": {"from": 2, "to": 3}, "device": {"from": "auto", "to": "cpu"}}}]
    assert open_signals(run)["loss"].shape == (3, 64)


# --------------------------------------------------------------------------------------------- bench folders

def _grid(out: Path, *extra: str) -> list[str]:
    return ["bench", *TINY, "--epochs", "1", "--methods", "ce", "--noise-rates", "0.2", "--seeds", "0", *extra,
            "--out", str(out)]


def test_bench_out_is_keyed_by_the_whole_configuration(finished, tmp_path, capsys):
    grid = _copy(finished, "grid", tmp_path)
    spec = (grid / "grid.json").read_text()
    err = _error(capsys, _grid(grid, "--model", "lenet"))
    assert err.startswith(f"curriculoss: error: --out {grid} holds a grid of another configuration: ")
    assert "lr 0.01 (the grid's 0.03), model 'lenet' (the grid's 'mlp')" in err  # lenet's default rate too
    assert (grid / "grid.json").read_text() == spec
    with pytest.raises(SystemExit, match=r"--epochs \(epochs 2, the grid's 1\)"):
        main(["bench", "--resume", str(grid), "--epochs", "2", "--quiet"])
    cell = grid / "ce" / "rate0.2" / "seed0" / "results.json"
    stamp = cell.stat().st_mtime_ns
    assert main(_grid(grid)) == 0  # the same grid: its finished cell is kept
    assert "holds this grid already" in capsys.readouterr().err and cell.stat().st_mtime_ns == stamp
    assert main(_grid(grid, "--epochs", "2", "--overwrite")) == 0
    assert json.loads((grid / "grid.json").read_text())["base"]["epochs"] == 2
    assert json.loads(cell.read_text())["epochs"] == 2


def test_bench_and_train_folders_do_not_mix(finished, tmp_path, capsys):
    run, grid = _copy(finished, "run", tmp_path), _copy(finished, "grid", tmp_path)
    before = _stamps(run)
    for extra in ([], ["--overwrite"]):
        assert f"--out {run}: a training run folder" in _error(capsys, _grid(run, *extra))
    assert _stamps(run) == before and not (run / "grid.json").exists()
    assert main(["train", *TINY, "--out", str(grid)]) == 2
    assert f"{grid} is a bench folder" in capsys.readouterr().err


def test_bench_folder_is_locked_while_written(tmp_path, capsys):
    out = tmp_path / "grid"
    with run_folder_lock(out):
        assert main(_grid(out)) == 2
    assert f"run folder {out} is in use by another run (process {os.getpid()}" in capsys.readouterr().err
    assert not (out / "grid.json").exists()


def test_a_finished_cell_of_another_configuration_is_not_reused(finished, tmp_path, capsys):
    grid = _copy(finished, "grid", tmp_path)
    args = grid / "ce" / "rate0.2" / "seed0" / "args.json"
    args.write_text(json.dumps({**json.loads(args.read_text()), "batch_size": 16}))
    assert main(["bench", "--resume", str(grid), "--quiet"]) == 2
    assert "holds a finished run of another configuration" in capsys.readouterr().err


def test_noise_rates_that_share_a_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "grid"
    with pytest.raises(SystemExit) as exc:
        main(["bench", *TINY, "--methods", "ce", "--noise-rates", "0.1", "0.1000001", "--out", str(out)])
    assert str(exc.value).startswith("curriculoss: error: argument --noise-rates: the rates 0.1 and 0.1000001 "
                                     "would share the folder rate0.1")
    assert not out.exists()


# ----------------------------------------------------------------------------------------- one-line errors


def test_empty_test_set_is_refused(tmp_path, capsys):
    data = tmp_path / "empty_test.npz"
    np.savez(data, x=np.ones((8, 3)), y=np.arange(8) % 2, x_test=np.zeros((0, 3)), y_test=np.zeros(0, np.int64))
    out = tmp_path / "o"
    assert f"{data}: the test set is empty (0 rows)" in _error(
        capsys, ["train", *TINY, "--dataset", "npz", "--data-dir", str(data), "--out", str(out)])
    assert not (out / "args.json").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--milestones", "1"], "argument --milestones: only used with --schedule step"),
    (["--workers", "100000"], "argument --workers: expected an integer in [0, "),
    (["--workers", str(4 * (os.cpu_count() or 1) + 1)], "argument --workers"),
])
def test_options_out_of_place_or_range_are_refused(tmp_path, capsys, argv, needle):
    assert needle in _error(capsys, ["train", *TINY, *argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_flag_score_of_another_method_is_refused(finished, tmp_path, capsys):
    run = _copy(finished, "run", tmp_path)
    for score in ("superloss", "data-params"):
        assert f"argument --score: '{score}' reads the signal of a {score} run; {run} was trained with ce" in _error(
            capsys, ["flag", str(run), "--score", score])
    assert not (run / "suspects.csv").exists()
    # a bare signals file has no method to check: its confidence table holds nothing
    assert "holds no value in these signals" in _error(capsys, ["flag", str(run / "signals"), "--score",
                                                                "superloss"])


SMALL = ["--limit", "64", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("command", ["run", "train", "bench", "flag", "reproduce"])
def test_every_command_runs_its_smallest_invocation(finished, tmp_path, monkeypatch, capsys, command):
    out = str(tmp_path / "out")
    argv = {"run": ["run", *SMALL, "--out", out], "train": ["train", *SMALL, "--out", out],
            "bench": ["bench", *SMALL, "--methods", "ce", "--noise-rates", "0", "--seeds", "0", "--out", out],
            "flag": ["flag", str(_copy(finished, "run", tmp_path))],
            "reproduce": ["reproduce", "imae-table2", "--quick", "--quiet", "--out", out]}[command]
    real = reproduce.run_preset
    monkeypatch.setattr(reproduce, "run_preset", lambda name, **kw: real(
        name, **kw, seeds=(0,), overrides={"epochs": 1, "limit": 64}))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert {"run": "| superloss | 40% |", "train": "run folder:", "bench": "| ce | 0% |", "flag": "suspects",
            "reproduce": "Verdict"}[command] in printed


def test_progress_into_a_file_is_one_plain_line_per_epoch(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        assert main(["train", "--limit", "64", "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    epochs = [line for line in text.splitlines() if " epoch " in line]
    assert [line.split(" epoch ")[1].split(":")[0] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("ce r=0 s=0 epoch ") and "test " in line for line in epochs)


def test_every_train_option_shows_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    entries = {}
    for line in text.split("\n\n", 1)[1].splitlines():
        stripped = line.strip()
        if line.startswith("  --"):  # an option's own line (wrapped help text is indented further)
            flag = stripped.split()[0]
            entries[flag] = stripped
        elif stripped and entries:
            entries[flag] += " " + stripped
    assert {"--seed", "--epochs", "--batch-size", "--noise-rate", "--weight-decay", "--task", "--dp-class-lr",
            "--overwrite"} <= set(entries)
    missing = [flag for flag, entry in entries.items() if "default" not in entry]
    assert not missing, missing
    assert "(default: 0)" in entries["--seed"] and "(default: 30)" in entries["--epochs"]
