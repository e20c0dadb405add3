"""curriculoss.harness.cli: the command line's commands, help and exit."""
import subprocess
import sys

import pytest

from curriculoss.harness import reproduce
from curriculoss.harness.cli import main

from _helpers import ENV, copy_named as _copy_named


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_closed_pipe_exits_quietly(tmp_path, reader):
    cmd = (f"set -o pipefail; {sys.executable} -m curriculoss train --limit 100 --epochs 1 --quiet "
           f"--out {tmp_path / 'run'} | {reader}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV, timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode in (0, 141)  # 141: ended by the closed pipe, like `yes | head -1`


SMALL = ["--limit", "64", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("command", ["run", "train", "bench", "flag", "reproduce"])
def test_every_command_runs_its_smallest_invocation(finished_runs, tmp_path, monkeypatch, capsys, command):
    out = str(tmp_path / "out")
    argv = {"run": ["run", *SMALL, "--out", out], "train": ["train", *SMALL, "--out", out],
            "bench": ["bench", *SMALL, "--methods", "ce", "--noise-rates", "0", "--seeds", "0", "--out", out],
            "flag": ["flag", str(_copy_named(finished_runs, "run", tmp_path))],
            "reproduce": ["reproduce", "imae-table2", "--quick", "--quiet", "--out", out]}[command]
    real = reproduce.run_preset
    monkeypatch.setattr(reproduce, "run_preset", lambda name, **kw: real(
        name, **kw, seeds=(0,), overrides={"epochs": 1, "limit": 64}))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert {"run": "| superloss | 40% |", "train": "run folder:", "bench": "| ce | 0% |", "flag": "suspects",
            "reproduce": "Verdict"}[command] in printed


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
