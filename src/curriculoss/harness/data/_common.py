"""What the data readers share: the expected layouts (for error messages), the gzip inflation
bound, and the deterministic train/test split used where a format has no test split."""
from __future__ import annotations

import os
import stat

import numpy as np

EXPECTED = {
    "idx": "a directory with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
           "t10k-labels-idx1-ubyte (each optionally .gz)",
    "cifar10": "a directory with CIFAR-10's data_batch_1..5 and test_batch (binary .bin or python version), "
               "or its parent holding cifar-10-batches-bin or cifar-10-batches-py",
    "cifar100": "a directory with CIFAR-100's python version (train and test), or its parent holding "
                "cifar-100-python",
    "imagefolder": "a directory with one sub-folder of images per class (or train/ and test/ folders of them)",
    "npz": "a .npz file with arrays x, y and optionally x_test, y_test",
    "csv": "a CSV file, or a directory with train.csv and optionally test.csv; last column the label",
}

# Deflate compresses at most about 1032:1, so a gzip file cannot hold more than this many bytes per
# byte of file (with room for the headers): a larger declared size is refused before inflating.
_GZIP_MAX_RATIO = 1100


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))


def file_kind(mode: int) -> str:
    """What a file of `st_mode` `mode` is, for an error message ('a FIFO (named pipe)', ...)."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def check_file_or_dir(path: str | os.PathLike, expected: str) -> None:
    """Refuse a `path` that is neither a regular file nor a directory (`/dev/zero`, a FIFO: reading
    one never ends or blocks), before it is opened; `expected` says what was expected."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(f"{os.fspath(path)}: {file_kind(mode)}, not a regular file or a directory "
                         f"(expected {expected})")


def _split(x: np.ndarray, y: np.ndarray, classification: bool, test_size: float = 0.2):
    """Deterministic split of `test_size` (stratified where every class has two samples or more)."""
    from sklearn.model_selection import train_test_split

    if len(y) < 2:
        raise ValueError(f"need at least 2 samples to split off a test set; got {len(y)}")
    stratify = None
    if classification:
        _, counts = np.unique(y, return_counts=True)
        n_test = int(np.ceil(test_size * len(y)))
        if counts.min() >= 2 and n_test >= len(counts) and len(y) - n_test >= len(counts):
            stratify = y
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=0, stratify=stratify)
    return x_tr, y_tr, x_te, y_te
