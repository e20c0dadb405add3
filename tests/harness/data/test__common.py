"""curriculoss.harness.data._common: what is not a file or a folder is refused before it is read."""
import os
import signal

import pytest

from _helpers import TINY64, one_line_error as _error


@pytest.fixture
def deadline():
    """A read that blocks (a FIFO opened) fails the test after a minute instead of hanging it."""
    def expire(*_):
        raise TimeoutError("a read blocked: the FIFO was opened")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("dataset", ["csv", "npz", "idx"])
def test_a_data_dir_that_is_not_a_file_or_folder_is_refused_before_reading(tmp_path, capsys, deadline, dataset):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it to read would block until a writer comes
    err = _error(capsys, ["train", *TINY64, "--dataset", dataset, "--data-dir", str(fifo), "--out", str(tmp_path / "o")])
    assert f"--data-dir {fifo}: a FIFO (named pipe), not a regular file or a directory (expected " in err
    from curriculoss.harness import data as datasets

    with pytest.raises(ValueError, match="a FIFO"):
        datasets.load(dataset, data_dir=fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_dev_zero_as_a_csv_is_refused_before_reading(tmp_path, capsys, deadline):
    err = _error(capsys, ["train", *TINY64, "--dataset", "csv", "--data-dir", "/dev/zero", "--out", str(tmp_path / "o")])
    assert "--data-dir /dev/zero: a character device, not a regular file or a directory" in err
    fifo_in_folder = tmp_path / "csvdir"
    fifo_in_folder.mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo_in_folder / "train.csv")
        assert f"{fifo_in_folder / 'train.csv'}: a FIFO" in _error(
            capsys, ["train", *TINY64, "--dataset", "csv", "--data-dir", str(fifo_in_folder), "--out", str(tmp_path / "o")])
