"""Input checks and the reduction shared by the library's losses (and by the harness, whose messages
about the same arguments read the same).

Checks look at metadata only (type, dtype, shape, device), so they never synchronise with a device.
The one value check, targets in `[0, C)`, runs only on CPU tensors outside `torch.compile`:
there it costs no synchronisation, and elsewhere the indexing kernels report bad targets themselves.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")
#: Computed in float32 and returned in their own dtype by every loss (and by `lambertw`).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_reduction(reduction: str) -> None:
    """`reduction` is one of `REDUCTIONS`, the values torch's losses take."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_floating_tensor(name: str, x: object, *, tensor_hint: str = "", dtype_hint: str = "") -> None:
    """`x` is a floating-point `torch.Tensor`; the messages name it `name`, with the hints after
    "must be a torch.Tensor" and "must be a floating-point tensor"."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{tensor_hint}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor{dtype_hint}, got dtype {x.dtype}")


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Return `value` as a float after checking it is a finite real number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:  # the message is built here only: functional losses check their numbers on every call
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def check_logits_target(logits: Tensor, target: Tensor, *, min_classes: int = 1, values: bool = True) -> Tensor:
    """Check `logits` (B, C) floating and `target` (B,) integer; return `target` as int64.

    `values=False` leaves the range of the values to the caller, whose indexing of the logits by
    `target` (`gather`, which refuses any index outside `[0, C)`) comes first and calls
    `check_target_values` when it fails: an `aminmax` and two host reads fewer per call."""
    if isinstance(logits, Tensor) and not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices, got {type(target).__name__}")
    check_floating_tensor("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, C), got {tuple(logits.shape)}")
    if logits.shape[1] < min_classes:
        raise ValueError(f"logits must have at least {min_classes} classes (columns), got shape {tuple(logits.shape)}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must be an integer tensor of class indices (int64), got dtype {target.dtype}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape (B,) = ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"target must be on the device of logits ({logits.device}), got {target.device}")
    # Values are checked only where that costs no device synchronisation: CPU tensors (a host read),
    # in eager mode. On accelerators and the meta device the check is skipped, as in torch's own losses
    # on CUDA, which report a bad target asynchronously.
    if values and target.device.type == "cpu" and not torch.compiler.is_compiling():
        check_target_values(target, logits.shape[1])
    return target if target.dtype == torch.int64 else target.long()


def check_target_values(target: Tensor, num_classes: int) -> None:
    """Class indices in `[0, num_classes)`: a host read (call it on CPU tensors only)."""
    if target.numel() > 0:
        lo, hi = (v.item() for v in torch.aminmax(target))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"target must hold class indices in [0, {num_classes - 1}], got values in [{lo}, {hi}]")


def check_class_weights(name: str, weights: Tensor, num_classes: int | None = None) -> None:
    if not isinstance(weights, Tensor) or not weights.is_floating_point():
        raise TypeError(f"{name} must be None, a float or a floating-point tensor of shape (C,), "
                        f"got {getattr(weights, 'dtype', type(weights).__name__)}")
    if weights.dim() != 1 or (num_classes is not None and weights.shape[0] != num_classes):
        want = "(C,)" if num_classes is None else f"(C,) = ({num_classes},)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(weights.shape)}")


def compute_dtype(logits: Tensor) -> Tensor:
    """float16/bfloat16 logits upcast to float32 (the loss is computed there); others as they are."""
    return logits.float() if logits.dtype in LOW_PRECISION else logits


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Per-sample `values` reduced as `reduction` says (`'none'`: as they are)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values
