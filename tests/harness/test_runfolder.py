"""curriculoss.harness.runfolder: who may write a run folder, and how."""
import csv
import json
import os

import pytest

from curriculoss.harness.cli import main

from _helpers import TINY, TINY64, copy_named as _copy_named, stamps as _stamps


def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert main(["train", *TINY, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"curriculoss: error: {out}: ") and err.count("\n") == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_in_a_read_only_folder_is_a_one_line_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", *TINY, "--out", str(ro / "run")]) == 2
        assert capsys.readouterr().err.startswith(f"curriculoss: error: {ro / 'run'}: ")
    finally:
        ro.chmod(0o755)


def test_train_out_on_a_run_refuses_and_overwrite_replaces(finished_runs, tmp_path, capsys):
    run = _copy_named(finished_runs, "run", tmp_path)
    (run / "suspects.csv").write_text("index\n")
    (run / "notes.txt").write_text("mine")
    before = _stamps(run)
    assert main(["train", *TINY64, "--method", "superloss", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"curriculoss: error: {run} holds a run already (args.json") and err.count("\n") == 1
    assert f"--resume {run}" in err and "--overwrite" in err
    assert _stamps(run) == before
    assert main(["train", *TINY64, "--epochs", "1", "--method", "superloss", "--overwrite", "--out", str(run)]) == 0
    assert json.loads((run / "args.json").read_text())["method"] == "superloss"
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 1
    assert not (run / "suspects.csv").exists() and (run / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "--overwrite"])
    assert "not allowed with argument --resume" in capsys.readouterr().err
