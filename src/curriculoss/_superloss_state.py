"""The state of the `SuperLoss` module, as functions of its buffers: the running threshold, the counts and
the per-sample smoothing, updated in place with single tensor operations (at a training step's batch
size their count, not their arithmetic, is the cost).

`local_state` is one process's update; `fused_step` is it and Eqs. 3-4 as the one function that
`fused=True` compiles; `synced_state` and `global_step_scale` are the updates of a rank of a process
group, which see the global batch through one collective each.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from curriculoss._superloss import compute_dtype, superloss_forward
from curriculoss.distributed import all_gather_cat, all_reduce_sum

# float64 losses larger than this in magnitude are treated like infinite ones by the module's state: the
# running sums (float64) would overflow to inf after a few of them (the largest float64 is 1.8e308), and
# the threshold then turns inf and NaN for good. 1e290 leaves room for 1e18 such losses in a sum;
# float32 losses (< 3.4e38) cannot come near it. With float32 state (``.float()``, for devices without
# float64 such as Apple's MPS) the same holds for losses above 1e30 (room for 3e8 of them).
MAX_LOSS = {torch.float64: 1e290, torch.float32: 1e30}


def check_index_values(index: Tensor, num_samples: int, both_ends: bool = False) -> None:
    """Indices in [0, num_samples), checked on CPU in eager mode only: a negative index would otherwise
    wrap around silently (-1 is sample N-1). Elsewhere the check would synchronise with the device (or
    cannot run, under torch.compile and on meta), so it is skipped there and too large indices are left
    to the indexing kernel, as in torch's own indexing; negative ones are then not detected."""
    if index.device.type != "cpu" or index.numel() == 0 or torch.compiler.is_compiling():
        return
    # Eager: only the minimum is read on every step (two operations): an index too large fails in the
    # gather that comes before any write. The fused step gathers and writes in one kernel, so there
    # (``both_ends``) the maximum is checked too. The message's range is computed on the error path.
    if both_ends:
        lo, hi = (int(v) for v in torch.aminmax(index))
        bad = lo < 0 or hi >= num_samples
    else:
        bad = int(index.min()) < 0
    if bad:
        lo, hi = (int(v) for v in torch.aminmax(index))
        raise IndexError(index_message(num_samples, lo, hi))


def index_message(num_samples: int, lo: int, hi: int) -> str:
    return f"index must hold dataset indices in [0, {num_samples - 1}] (num_samples={num_samples}), got values in [{lo}, {hi}]"


def valid_entries(loss: Tensor, keep: Tensor | None, state: torch.dtype) -> Tensor:
    """Entries that may change the state: finite, not ignored, and not so large that the running sums
    of dtype `state` could overflow (see `MAX_LOSS`)."""
    valid = torch.isfinite(loss) if keep is None else torch.isfinite(loss) & keep
    if loss.dtype == torch.float64 or state == torch.float32:
        valid = valid & (loss.abs() <= MAX_LOSS[state])
    return valid


def smooth(loss: Tensor, index: Tensor, valid: Tensor, smoothed: Tensor, seen_buf: Tensor,
              smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """(source, stored, seen): the smoothed losses the confidence comes from, the values to store, and
    which entries had been seen. Gathers only: an out-of-range index fails with the state untouched."""
    previous = smoothed[index]
    seen = seen_buf[index]
    raw = loss.to(smoothed.dtype)
    # a' previous + (1 - a') loss; the first value seen initialises. Invalid entries keep their stored
    # value, but their confidence comes from their own loss (a huge float64 loss weighed by its tiny
    # sigma* keeps the output finite).
    source = torch.where(seen, torch.lerp(raw, previous, smoothing), raw)
    return source, torch.where(valid, source, previous), seen


def next_tau(mode: str, momentum: float, source: Tensor, valid: Tensor, loss_sum: Tensor, count: Tensor,
              tau: Tensor, reduce: bool = False) -> Tensor:
    """Update the running threshold (`tau`, in place) with this batch's valid `source` values and
    return it; `reduce`: sum the batch's (sum, count) over the process group first."""
    if mode == "fixed":
        return tau
    state = loss_sum.dtype
    batch_sum = torch.where(valid, source, 0.0).sum(dtype=state)
    batch_count = valid.sum()
    if reduce:  # the global batch's sum and count, summed over the ranks
        batch_sum, batch_count = all_reduce_sum(torch.stack([batch_sum, batch_count.to(state)])).unbind()
    if mode == "avg":
        # tau = sum / count stays as it was when the batch brings nothing (and 0 before any data).
        loss_sum += batch_sum
        count += batch_count
        return torch.div(loss_sum, count.clamp_min(1.0), out=tau)
    has_data = batch_count > 0
    batch_mean = batch_sum / batch_count.clamp_min(1)
    new_tau = torch.where(count > 0, momentum * tau + (1.0 - momentum) * batch_mean, batch_mean)
    count += batch_count
    tau.copy_(torch.where(has_data, new_tau, tau))
    return tau


def tau_for(loss: Tensor, index: Tensor | None, tau: Tensor) -> Tensor:
    """The threshold as the element-wise part takes it: 0-d for a 0-d loss, and in the loss's precision
    when there is no (float64) smoothed source."""
    if loss.dim() == 0:
        tau = tau.reshape(())
    if index is None and tau.dtype != compute_dtype(loss.dtype):
        tau = tau.to(compute_dtype(loss.dtype))
    return tau


def local_state(loss: Tensor, index: Tensor | None, keep: Tensor | None, smoothed: Tensor | None,
                 seen: Tensor | None, loss_sum: Tensor, count: Tensor, tau: Tensor, mode: str, momentum: float,
                 smoothing: float) -> tuple[Tensor | None, Tensor]:
    """One process's state update (no collective): the buffers change in place; returns (source: the
    smoothed losses, or `None` without smoothing; the threshold to use)."""
    valid = valid_entries(loss, keep, loss_sum.dtype)
    source = None
    if index is not None:
        source, stored, was_seen = smooth(loss, index, valid, smoothed, seen, smoothing)
    tau = next_tau(mode, momentum, loss if source is None else source, valid, loss_sum, count, tau)
    if index is not None:
        smoothed.index_put_((index,), stored)
        seen.index_put_((index,), was_seen | valid)
    return source, tau_for(loss, index, tau)


def fused_step(loss, index, keep, smoothed, seen, loss_sum, count, tau, mode, momentum, smoothing, lam, precision,
               reduction, out_dtype, normalise):
    """The module's whole forward without autograd, for `fused=True`: the state update and Eqs. 3-4.
    Compiled, it is one kernel on the CPU (state gathers and scatters included)."""
    source, tau = local_state(loss, index, keep, smoothed, seen, loss_sum, count, tau, mode, momentum, smoothing)
    out, sigma, factor = superloss_forward(loss, source, tau, lam, precision, reduction, keep, out_dtype, True,
                                           normalise)
    return out, sigma, factor, source, tau


def synced_state(module: nn.Module, loss: Tensor, index: Tensor | None,
                 keep: Tensor | None) -> tuple[Tensor | None, Tensor]:
    """The state update of a process group's rank, on the buffers of the `SuperLoss` `module`: the
    global batch's, as one process would make it."""
    state = module.loss_sum.dtype
    valid = valid_entries(loss, keep, state)
    if index is None:  # one all_reduce of the batch's (sum, count)
        tau = next_tau(module.tau_mode, module.momentum, loss, valid, module.loss_sum, module.count, module.tau, reduce=True)
        return None, tau_for(loss, index, tau)
    source, stored, seen = smooth(loss, index, valid, module.smoothed_loss, module.seen, module.smoothing)
    # One all_gather of the global batch: (index, smoothed, seen, loss entering tau or NaN).
    entering = torch.where(valid, source, math.nan)
    if state != torch.float64 and module.num_samples > 2 ** 24:
        raise ValueError(f"float32 state packs indices as float32, exact up to 2**24; num_samples="
                         f"{module.num_samples} needs the default float64 state under distributed training")
    packed = torch.stack([index.reshape(-1).to(state), stored.reshape(-1),
                          (seen | valid).reshape(-1).to(state), entering.reshape(-1)], 1)
    packed = all_gather_cat(packed)
    g_index = packed[:, 0].to(torch.int64)
    g_valid = ~torch.isnan(packed[:, 3])
    tau = next_tau(module.tau_mode, module.momentum, packed[:, 3], g_valid, module.loss_sum, module.count, module.tau)
    module.smoothed_loss.index_put_((g_index,), packed[:, 1])
    module.seen.index_put_((g_index,), packed[:, 2] > 0)
    return source, tau_for(loss, index, tau)


def global_step_scale(sigma: Tensor, keep: Tensor | None, state: torch.dtype) -> Tensor:
    """`1 / mean(sigma*)` over the kept entries of the global batch (one `all_reduce`, in the
    state's dtype)."""
    with torch.no_grad():
        kept = sigma if keep is None else torch.where(keep, sigma, 0.0)
        count = kept.new_full((), float(kept.numel()), dtype=state) if keep is None else keep.sum().to(state)
        total, n = all_reduce_sum(torch.stack([kept.sum(dtype=state), count])).unbind()
        return (n / total.clamp_min(torch.finfo(state).tiny)).to(sigma.dtype)
