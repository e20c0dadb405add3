"""`curriculoss flag`'s reading of a `signals.npz`: the members it uses, checked before any is inflated.

`labels` (one integer per sample) gives N. The per-epoch tables (`loss`, `confidence`, `margin`)
must be real numbers of one shape `(epochs, N)` (or `(N,)`: one epoch), with no more epochs than the
run has when its `args.json` says; `predicted` and `noise_mask` hold one integer (or boolean) per
sample. All of this is read from the members' `.npy` headers; a table is inflated only when a score or
a plot reads it, and members flag does not use (`true_labels`, a user's extras) are never read.
"""
from __future__ import annotations

import os

from curriculoss.harness.data.npzfile import LazyNpz, NpzError

__all__ = ["open_signals", "TABLES"]

#: The per-epoch tables, `(epochs, N)`.
TABLES = ("loss", "confidence", "margin")
#: The per-sample members flag reads besides `labels`, and the dtype kinds each may have.
_PER_SAMPLE = {"predicted": "iu", "noise_mask": "biu"}
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "unsigned integers", "f": "floats", "c": "complex numbers",
               "U": "text", "S": "bytes", "V": "raw records", "M": "dates", "m": "time spans", "O": "objects"}


def open_signals(path: str | os.PathLike, *, epochs: int | None = None) -> LazyNpz:
    """The signals at `path`, their layout checked (`epochs`: the run's, when known).

    Raises:
        NpzError: a damaged archive, or a member flag uses that is missing or of the wrong dtype or
            shape; the message names the file and the member.
    """
    signals = LazyNpz(path)
    try:
        n = _sample_count(signals)
        _check_tables(signals, n, epochs)
        for key, kinds in _PER_SAMPLE.items():
            if key in signals:
                _check_per_sample(signals, key, n, kinds)
    except BaseException:
        signals.close()
        raise
    return signals


def _kind(dtype) -> str:
    return _KIND_NAMES.get(dtype.kind, str(dtype))


def _sample_count(signals: LazyNpz) -> int:
    if "labels" not in signals:
        raise NpzError(f"{signals.path}: member labels is missing (the given label of each training sample, "
                       "written by curriculoss.recorder.Recorder.save); not a signals file")
    return _check_per_sample(signals, "labels", None, "iu")


def _check_per_sample(signals: LazyNpz, key: str, n: int | None, kinds: str) -> int:
    shape, dtype = signals.header(key)
    wanted = "integers" if kinds == "iu" else "booleans or integers"
    if dtype.kind not in kinds:
        raise signals.error(key, f"holds {_kind(dtype)} ({dtype}); expected {wanted}, one per sample")
    if len(shape) != 1 or (n is not None and shape[0] != n):
        raise signals.error(key, f"has shape {shape}; expected ({'N' if n is None else n},), one value per "
                                 "sample" + ("" if n is None else " of labels"))
    if shape[0] == 0:
        raise signals.error(key, "is empty: no samples")
    return shape[0]


def _check_tables(signals: LazyNpz, n: int, epochs: int | None) -> None:
    shapes = {}
    for key in (k for k in TABLES if k in signals):
        shape, dtype = signals.header(key)
        if dtype.kind not in "fiu":
            raise signals.error(key, f"holds {_kind(dtype)} ({dtype}); expected real numbers (floats)")
        if not 1 <= len(shape) <= 2 or shape[-1] != n or (len(shape) == 2 and shape[0] == 0):
            raise signals.error(key, f"has shape {shape}; expected (epochs, {n}): one row per epoch, one column "
                                     f"per sample of labels")
        if epochs is not None and len(shape) == 2 and shape[0] > epochs:
            raise signals.error(key, f"has {shape[0]} epochs; the run (args.json) has {epochs}")
        shapes[key] = shape
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise NpzError(f"{signals.path}: members {listed} differ in shape; expected one (epochs, {n})")
