"""One run per run folder: an exclusive lock held while a run writes its folder.

Two `curriculoss train --out X` at once would interleave their files (`args.json` of one run, the
checkpoint and signals of the other), and `curriculoss flag X` would then rank with the wrong
signal. `run_folder_lock` takes an exclusive, non-blocking `fcntl.flock` on `X/.lock` and
holds it for the whole run; a second run on the same folder is refused with `RunFolderInUse`,
which names the folder and the process holding it.

A lock cannot go stale: the kernel releases `flock` locks when their process ends, however it ends
(SIGKILL included), so the next run (`--resume` or a new one) takes the folder over without any
clean-up. The `.lock` file itself stays in the folder on purpose: deleting it on exit would let a
third process lock a fresh file while a second still holds the old one. It holds the PID of the last
holder, for the error message only.

Where `fcntl` does not exist (Windows) no lock is taken. Under `torchrun` only the writing rank
(rank 0) takes the lock.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through this module
    fcntl = None  # type: ignore[assignment]

__all__ = ["run_folder_lock", "check_not_in_use", "RunFolderInUse", "LOCK_NAME"]

LOCK_NAME = ".lock"


class RunFolderInUse(RuntimeError):
    """Another live process is writing this run folder."""


def check_not_in_use(run_dir: str | os.PathLike) -> None:
    """Raise `RunFolderInUse` if a live process holds `run_dir`'s lock; creates nothing (a folder
    or a lock file that is not there is not in use)."""
    if fcntl is None:
        return
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        _lock(fd, Path(run_dir), path)
    finally:
        os.close(fd)  # releases the lock, if this call took it


def _lock(fd: int, run_dir: Path, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        raise RunFolderInUse(
            f"run folder {run_dir} is in use by another run (process {holder}, lock {path}); wait for it "
            f"to finish, or choose another --out") from None


@contextmanager
def run_folder_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Create `run_dir` if needed and hold an exclusive lock on it for the duration of the block.

    Raises:
        RunFolderInUse: another live process holds the folder.
        OSError: `run_dir` cannot be created or written (a file of that name, a read-only parent, ...).
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file of that name: say so, rather than "File exists"
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory (a run folder must be one)",
                                 str(run_dir)) from None
    if fcntl is None:
        yield
        return
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, run_dir, path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
