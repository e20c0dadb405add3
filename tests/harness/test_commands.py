"""curriculoss.harness.commands: the checks of the commands' files, folders and resumed options."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from curriculoss.harness.cli import main

from _helpers import (ENV, PAYLOAD, TINY, TINY64, copy_named as _copy_named, grid_argv as _grid,
                      one_line_error as _error, stamps as _stamps)


def test_bad_files_name_themselves(tmp_path, capsys):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("f,label\n1.5,0\n2.5,1\n\xe9t\xe9,1\n".encode("latin-1"))
    assert main(["train", *TINY, "--dataset", "csv", "--data-dir", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"curriculoss: error: {bad}: not UTF-8" in capsys.readouterr().err
    noise = tmp_path / "noise.csv"
    noise.write_bytes(b"\xff\xfe1\n")
    assert main(["train", *TINY, "--noise", "file", "--noise-file", str(noise), "--out", str(tmp_path / "o")]) == 2
    assert f"curriculoss: error: {noise}: not UTF-8" in capsys.readouterr().err
    # a broken args.json, for --resume and for flag; a broken grid.json for bench --resume
    run = tmp_path / "run"
    run.mkdir()
    for text in ('{"method": "ce",', "[1, 2]", '{"lr": "fast"}', '{"lr": NaN}'):
        (run / "args.json").write_text(text)
        with pytest.raises(SystemExit) as exc:
            main(["train", "--resume", str(run), "--quiet"])
        assert str(exc.value).startswith(f"curriculoss: error: {run / 'args.json'}: ")
    for name in ("signals.npz", "checkpoint.pt"):
        (run / name).write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main(["flag", str(run)])
    assert str(exc.value).startswith(f"curriculoss: error: {run / 'args.json'}: ")
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "grid.json").write_bytes(b"\x80{")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--resume", str(tmp_path / "grid"), "--quiet"])
    assert str(exc.value).startswith(f"curriculoss: error: {tmp_path / 'grid' / 'grid.json'}: ")


def test_bench_repeated_values_are_one_run(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["bench", *TINY, "--epochs", "1", "--methods", "ce", "ce", "--noise-rates", "0.4", "0.4",
                 "--seeds", "0", "0", "--out", str(out)]) == 0
    assert "--seeds repeats values; using 0" in capsys.readouterr().err
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["seeds"] == "1"
    assert json.loads((out / "grid.json").read_text())["seeds"] == [0]


def test_default_run_folders_differ_by_the_options_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for extra in (["--lr", "0.05"], ["--lr", "0.1"], ["--lr", "0.1", "--epochs", "1"],
                  ["--method", "superloss", "--lam", "2"], ["--method", "superloss", "--lam", "3"]):
        assert main(["train", *TINY64, *extra]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 5 and "digits-ce-rate0-seed0-lr0.05-e2-bs32-n64" in names, names
    assert "digits-ce-rate0-seed0-lr0.1-e1-bs32-n64" in names
    assert sum(n.startswith("digits-superloss-rate0-seed0-e2-bs32-n64-cfg") for n in names) == 2


CURRICULOSS = str(Path(sys.executable).with_name("curriculoss"))


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


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "outside"])
@pytest.mark.parametrize("command", ["flag", "train", "bench"])
def test_a_folder_never_gets_its_code_imported(finished_runs, tmp_path, monkeypatch, capsys, clean_imports, command,
                                               inside):
    folder = _copy_named(finished_runs, "grid" if command == "bench" else "run", tmp_path)
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
def test_console_script_inside_a_received_folder(finished_runs, tmp_path):
    folder = _copy_named(finished_runs, "run", tmp_path)
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
    assert main(["train", *TINY64, "--epochs", "1", "--model", "mynets_rf:make_net", "--out", str(run)]) == 0
    with pytest.raises(SystemExit, match="give --model mynets_rf:make_net"):
        main(["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    with pytest.raises(SystemExit, match=r"--model \(model 'mlp', the run's 'mynets_rf:make_net'\)"):
        main(["train", "--resume", str(run), "--model", "mlp", "--quiet"])
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--model", "mynets_rf:make_net", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    sys.modules.pop("mynets_rf", None)


def test_resume_with_other_options_refuses_and_lists_them(finished_runs, tmp_path, capsys):
    run = _copy_named(finished_runs, "run", tmp_path)
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


def test_bench_out_is_keyed_by_the_whole_configuration(finished_runs, tmp_path, capsys):
    grid = _copy_named(finished_runs, "grid", tmp_path)
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


def test_bench_and_train_folders_do_not_mix(finished_runs, tmp_path, capsys):
    run, grid = _copy_named(finished_runs, "run", tmp_path), _copy_named(finished_runs, "grid", tmp_path)
    before = _stamps(run)
    for extra in ([], ["--overwrite"]):
        assert f"--out {run}: a training run folder" in _error(capsys, _grid(run, *extra))
    assert _stamps(run) == before and not (run / "grid.json").exists()
    assert main(["train", *TINY64, "--out", str(grid)]) == 2
    assert f"{grid} is a bench folder" in capsys.readouterr().err
