"""`torch.compile` for the fused paths (`lambertw(..., fused=True)`, `SuperLoss(fused=True)`).

A fused path compiles the same functions the eager code runs, as one graph each, once per process.
Where no compiler works at run time (e.g. no C++ toolchain), the first compiled call fails: its device
type is then recorded in `BROKEN`, and from then on every fused path on that device runs the eager
code.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor

#: Device types on which a compiled call failed: the fused paths run eagerly there.
BROKEN: set[str] = set()


@functools.lru_cache(maxsize=None)
def compiled(fn: Callable, dynamic: bool) -> Callable | None:
    """`fn` compiled as one graph (`fullgraph=True`), once per process; `None` when
    `torch.compile` is unavailable.

    `dynamic=True` makes sizes and Python floats symbolic: a functional call's `tau` and `lam` may
    change from call to call without recompiling, but every float constant of the arithmetic then
    becomes a tensor argument made anew on each call (three operations apiece). A step whose floats
    are fixed is compiled with `dynamic=False`, and its sizes marked dynamic per call
    (`mark_dynamic`), so that a new batch size still reuses the graph.
    """
    try:
        return torch.compile(fn, dynamic=dynamic, fullgraph=True)
    except Exception:  # pragma: no cover - no compiler on this platform
        return None


def call_compiled(fn: Callable, dynamic: bool, device_type: str, *args: Any,
                  mark: tuple[Tensor | None, ...] = ()) -> Any:
    """`fn(*args)` through its compiled graph (see `compiled`), the tensors in `mark` marked dynamic
    first (`mark_dynamic`); `None` when it cannot run compiled: inside another compilation (the
    caller's eager code is then traced into that graph), without `torch.compile`, or where compiling
    failed on `device_type` (recorded in `BROKEN`)."""
    if device_type in BROKEN or torch.compiler.is_compiling():
        return None
    graph = compiled(fn, dynamic)
    if graph is None:
        return None
    mark_dynamic(*mark)
    try:
        return graph(*args)
    except Exception:  # no working compiler at run time (e.g. no C++ toolchain): stay eager
        BROKEN.add(device_type)
        return None


def mark_dynamic(*tensors: Tensor | None) -> None:
    """Mark every dimension of these tensors dynamic for the compiled graphs (no recompilation per size)."""
    for t in tensors:
        if t is not None:
            for d in range(t.dim()):
                torch._dynamo.maybe_mark_dynamic(t, d)
