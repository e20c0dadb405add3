"""curriculoss.harness.progress: a run's progress on a terminal, in a file, or nothing."""
import contextlib
import sys

from curriculoss.harness.cli import main
from curriculoss.harness.progress import progress_bar, stderr_is_terminal


def test_progress_into_a_file_is_one_plain_line_per_epoch(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        assert main(["train", "--limit", "64", "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    epochs = [line for line in text.splitlines() if " epoch " in line]
    assert [line.split(" epoch ")[1].split(":")[0] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("ce r=0 s=0 epoch ") and "test " in line for line in epochs)


ROW = {"epoch": 2, "train_loss": 0.123456, "train_acc_noisy": 0.5, "test_metric": 0.25, "seconds": 1.54}


def test_into_a_file_each_epoch_is_the_documented_line(capsys):
    bar = progress_bar(True, "ce seed 0", epochs=5, steps=10, start=0, position=0)
    bar.update(10)
    bar.end_epoch(ROW)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "ce seed 0 epoch 2/5: train loss 0.1235, train acc 0.5000, test 0.2500, 1.5 s\n"


def test_disabled_progress_writes_nothing(capsys):
    bar = progress_bar(False, "x", epochs=5, steps=10, start=0, position=0)
    bar.update(3)
    bar.end_epoch(ROW)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_a_closed_or_replaced_stderr_is_not_a_terminal(monkeypatch):
    class Closed:
        def isatty(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stderr", Closed())
    assert stderr_is_terminal() is False
    monkeypatch.setattr(sys, "stderr", object())
    assert stderr_is_terminal() is False
