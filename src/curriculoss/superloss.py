r"""SuperLoss (Castells, Weinzaepfel and Revaud, NeurIPS 2020), Eqs. 1-4.

Put on top of any per-sample task loss $\ell_i$, the SuperLoss weighs each sample by a confidence
$\sigma_i$ that minimises

$$
L_\lambda(\ell_i, \sigma_i) = (\ell_i - \tau)\,\sigma_i + \lambda (\log \sigma_i)^2    \qquad (1)
$$

in closed form through the principal branch of the Lambert W function:

$$
\sigma^*_\lambda(\ell_i) = e^{-W(\frac12 \max(-\frac2e,\ \beta_i))},
\quad \beta_i = \frac{\ell_i - \tau}{\lambda}                                          \qquad (4)
$$

and $SL_\lambda(\ell_i) = L_\lambda(\ell_i, \sigma^*_\lambda(\ell_i))$ (Eq. 3). The cap is
$-2/e$, not the $-2/\lambda$ of the paper's transcription (an erratum of that transcription): below it
the minimum is unbounded and the cap gives $\sigma^* = e$, the largest confidence SuperLoss ever
assigns. $\tau$ and $\sigma^*$ are computed from the detached loss and treated as constants, so
$\partial SL / \partial \ell_i = \sigma^*_i$ (a clarification of the paper's transcription). Since
$\log \sigma^* = -W$, the regulariser is $\lambda W^2$.

Cost: at the batch sizes of a training step, the number of operations dispatched is the cost, so the
module folds its work into few of them (one autograd node whose backward is `grad * sigma*`, Lambert W
solved in place, the state updated with single operations): 52 top-level torch operations for
`SuperLoss(tau='avg', num_samples=N)` on a cross-entropy, forward and backward, the cross-entropy's 5
and the index check's 2 included (`tests/test_speed.py` keeps that budget). `fused=True` runs the
whole step as one `torch.compile`'d kernel. Eqs. 3-4 are computed in `curriculoss._superloss`, the
module's state in `curriculoss._superloss_state`.

Everything here is tensor-native: no host synchronisation, so it runs on CUDA, on `meta` tensors
and under `torch.compile(fullgraph=True)`. The only exception is `SuperLoss` under
`torch.distributed` with more than one process, which exchanges its batch statistics between the
ranks (see its docstring); outside a process group it makes no collective call.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor

from curriculoss._compile import call_compiled
from curriculoss.checks import LOW_PRECISION, check_floating_tensor, check_reduction
from curriculoss._lambertw import precision_of
from curriculoss._loss import Loss
from curriculoss._superloss import Precomputed, SuperLossFunction, compute_dtype, elementwise
from curriculoss._superloss_state import (MAX_LOSS, check_index_values, fused_step, global_step_scale, local_state,
                                          smooth, synced_state, tau_for, valid_entries)
from curriculoss.distributed import is_distributed

__all__ = ["superloss_confidence", "superloss", "SuperLoss", "STEPS"]

#: The batch objectives: the batch's SL divided by its mean sigma* (default), or Eq. 3 as written.
STEPS = ("normalised", "paper")


def _check_lam(lam: float) -> None:
    if isinstance(lam, bool) or not isinstance(lam, Real) or not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")


def _check_tau(tau: Tensor | float) -> None:
    """The functional forms' threshold: a finite number or a floating tensor (values not read: no sync)."""
    if isinstance(tau, Tensor):
        if not tau.is_floating_point():
            raise TypeError(f"tau must be a finite number or a floating-point tensor, got dtype {tau.dtype}")
    elif isinstance(tau, bool) or not isinstance(tau, Real) or not math.isfinite(tau):
        hint = " (running thresholds belong to the SuperLoss module)" if isinstance(tau, str) else ""
        raise ValueError(f"tau must be a finite number or a floating-point tensor, got {tau!r}{hint}")


def _check_loss(loss: Tensor) -> None:
    check_floating_tensor("loss", loss, tensor_hint=" of per-sample losses")


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}, got {step!r}")


def superloss_confidence(loss: Tensor, tau: Tensor | float, lam: float = 1.0) -> Tensor:
    r"""Optimal confidence $\sigma^*_\lambda(\ell)$ of Eq. 4, elementwise, detached.

    Args:
        loss: per-sample input losses, any shape, floating point.
        tau: threshold, a number or a tensor broadcastable to `loss`.
        lam: regularisation $\lambda > 0$ (the paper uses 1 for 10 classes, 0.25 for 100).

    Returns:
        $\sigma^*$ in $(0, e]$, same shape as `loss` (NaN where `loss` is NaN).
        $\sigma^* > 1$ for easy samples ($\ell < \tau$), $< 1$ for hard ones.
    """
    _check_loss(loss)
    _check_lam(lam)
    _check_tau(tau)
    if loss.dtype in LOW_PRECISION:
        return superloss_confidence(loss.float(), tau, lam).to(loss.dtype)
    with torch.no_grad():
        x = loss.to(compute_dtype(loss.dtype))
        _, sigma = elementwise(x, None, tau, lam, precision_of(loss.dtype))
    return sigma.to(loss.dtype)


def superloss(loss: Tensor, tau: Tensor | float, lam: float = 1.0, reduction: str = "mean", *,
              step: str = "normalised", fused: bool = False) -> Tensor:
    r"""SuperLoss of Eq. 3 with a given threshold:
    $SL_\lambda(\ell_i) = (\ell_i - \tau)\sigma^*_i + \lambda (\log \sigma^*_i)^2$.

    $\tau$ and $\sigma^*$ are constants for autograd:
    $\partial SL/\partial\ell_i = \sigma^*_i$, for second derivatives too (a double backward, e.g. a gradient penalty, works, as with
    the `SuperLoss` module).

    Args:
        loss: per-sample input losses (`reduction='none'` output of the task loss), any shape.
        tau: threshold, a number (e.g. $\log C$ for classification, Sec. 2.4; 0.5 for digit
            regression, Sec. 3.2) or a tensor broadcastable to `loss`.
        lam: regularisation $\lambda > 0$.
        reduction: `'none'` | `'mean'` | `'sum'`.
        step: `'normalised'` (default) divides the output by the batch's mean $\sigma^*$, a
            detached constant, so the gradient w.r.t. $\ell_i$ is
            $\sigma^*_i / \sum_j \sigma^*_j$ for `'mean'`; `'paper'` is Eq. 3 as written.
            See [`SuperLoss`][curriculoss.SuperLoss] for why the default differs from the paper.
        fused: compute the element-wise part as one `torch.compile`'d kernel (compiled once per
            process, dynamic batch sizes; eager code when no compiler works).

    Shape:
        loss: any shape; output: same shape for `'none'`, scalar otherwise.

    Examples:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target = torch.randint(10, (8,))
        >>> ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        >>> superloss(ce, tau=math.log(10), lam=1.0).backward()
    """
    _check_loss(loss)
    _check_lam(lam)
    _check_tau(tau)
    check_reduction(reduction)
    _check_step(step)
    if loss.dtype in LOW_PRECISION:
        return superloss(loss.float(), tau, lam, reduction, step=step, fused=fused).to(loss.dtype)
    if isinstance(tau, Tensor):
        tau = tau.detach().to(compute_dtype(loss.dtype))
    out, _ = SuperLossFunction.apply(loss, None, tau, float(lam), reduction, None, bool(fused), step == "normalised")
    return out


class SuperLoss(Loss):
    r"""SuperLoss with a running threshold and optional per-sample loss smoothing (Sec. 3.1).

    `forward(loss, index=None, mask=None)` takes per-sample losses of any shape and returns
    $SL_\lambda$ (Eq. 3) reduced by `reduction`.

    **Threshold** `tau`:

    * `'avg'`: the global average of every input loss seen so far ("Avg" in the paper);
    * `'ema'`: an exponential running average of the batch means,
      $\tau \leftarrow m\,\tau + (1-m)\,\bar\ell_{batch}$ with `momentum` $m = 0.9$,
      the paper's $\alpha$ ("ExpAvg"); the first batch sets $\tau = \bar\ell_{batch}$;
    * a number: a fixed threshold, e.g. $\log C$ for classification (Sec. 2.4) or 0.5 for
      digit regression (Sec. 3.2).

    The running thresholds are updated with this batch's losses *before* they are used, so the
    first batch is weighed against its own mean. The losses averaged are the ones the confidence
    is computed from (the smoothed ones when smoothing is on).

    **Smoothing** (when `num_samples` is given): each sample's loss is smoothed over the epochs by an
    exponential average with $\alpha' =$ `smoothing` (0.9 in the paper, after SELF),
    $\tilde\ell_i \leftarrow \alpha'\tilde\ell_i + (1-\alpha')\ell_i$, initialised with the first
    loss seen; `forward` must then get each sample's dataset `index`, in `[0, num_samples)`
    (checked on CPU tensors in eager mode; on accelerators the check would synchronise with the host,
    so it is skipped and, as in tensor indexing, a negative index there counts from the end). The
    confidence comes from $\tilde\ell_i$; the gradient still flows through the raw loss
    ($\partial SL/\partial\ell_i = \sigma^*(\tilde\ell_i)$). Leave `num_samples=None` for
    unbounded sample sets (detection anchors, metric-learning pairs), as the paper does. When an index
    appears twice in one batch, both entries read the previous smoothed value and one of them is stored.

    **Step** (`step`): the paper's batch mean of $SL$ (`step='paper'`) has gradient
    $\sigma^*_i / B$ w.r.t. $\ell_i$, and $\sigma^*_i$ reaches $e$ for every
    sample below $\tau - 2\lambda/e$. Early in training, while `'avg'` trails the falling
    losses, half or more of a batch sits there and the step is about twice the base loss's at the same
    learning rate: LeNet-5 on 10,000 MNIST images, SGD lr 0.1, momentum 0.9, batch 64, died (test
    accuracy 9.6-11.4 % after 2 epochs in 3 of 3 seeds) where plain cross-entropy trained (85-88 %).
    The default, `step='normalised'`, divides the batch's output by its mean $\sigma^*$ (a
    detached constant, like $\sigma^*$ itself; over the kept entries of the *global* batch under
    `torch.distributed` with `sync`): the same relative weights (Eq. 4), and the step of a weighted
    mean of the base loss's per-sample gradients, $\sum_i w_i \nabla\ell_i$ with
    $w_i = \sigma^*_i / \sum_j \sigma^*_j$, never larger in scale than the base loss's. The
    same runs then reached 84.8-94.1 %. The paper trains SuperLoss with its baseline's
    hyper-parameters; the normalised step keeps that learning rate meaning the same thing. For
    `reduction='none'` every entry is divided by the same constant, so a later `.mean()` gives the
    normalised step.

    **Training and evaluation**, as `nn.BatchNorm`'s running statistics: in `train()` mode (the
    default) `forward` updates the threshold, counts and smoothing buffers, also under
    `torch.no_grad()`; in `eval()` mode it computes with the current state and changes nothing,
    makes no collective call and needs no `index` (without one, the confidence comes from the loss
    itself; with one, from the stored smoothed loss blended with it, as a training step would). A
    validation step may therefore call the criterion as the training step does.

    **Mask.** `mask`: a boolean tensor shaped like `loss` where `True` marks entries to **ignore** (e.g.
    anchors assigned to neither foreground nor background). Ignored entries return 0, are left out of
    the mean and update no state. Entries whose loss is NaN or infinite never change the threshold,
    the counts or the smoothing buffers (their own output may be NaN, as in PyTorch's losses); nor do
    float64 losses beyond `1e290` in magnitude, which would overflow the float64 running sums.

    **dtypes**: float16 and bfloat16 losses are computed in float32 and the output and `.confidence`
    returned in the loss's dtype (in half precision the cap of Eq. 4 does not land on `-1/e`); the
    state stays float64. On a device without float64 (Apple's MPS) call `.float()` first: the state
    is then float32 and no float64 tensor is made; the `'avg'` threshold's running sum then carries
    float32's 7 digits (over 10^7 losses its rounding reaches about 1e-3 relative), and under
    distributed training with smoothing `num_samples` must stay below `2**24`.

    **State**: the threshold, the running sums and counts (float64) and the smoothing buffers are
    registered buffers: they follow `.to()`, are saved by `state_dict` and restore bit-exactly.
    After each forward, `.confidence` holds the batch's $\sigma^*$ (detached, shaped like
    `loss`) and `.tau` the threshold used (a one-element float64 tensor: `float(module.tau)`), and
    `.at_cap` marks (bool, shaped like `loss`) the entries whose $\beta$ is at or below the
    cap $-2/e$, i.e. $\sigma^* = e$, the largest confidence (`False` for ignored entries).

    **Distributed training** (`torch.distributed`, any backend): when `sync=True` (default) and a
    process group with more than one process is initialised at the time of `forward`, the state is
    kept identical on every rank and equal to that of one process fed the *global* batch (the
    concatenation of the ranks' batches in rank order), to float tolerance:

    * running threshold without smoothing (`'avg'`, `'ema'`): one `all_reduce` of the batch's
      (sum, count) of valid losses (16 bytes), so `tau` is computed from the global batch;
    * with smoothing: one `all_gather` of every entry's (index, new smoothed loss, seen flag, loss
      entering `tau` or NaN if invalid), 32 bytes per entry after a one-int64 size exchange, i.e.
      O(global batch) per step, never O(`num_samples`); every rank then writes all of the global
      batch's entries into its buffers in the single-process order (duplicates, also across ranks,
      behave as within one batch) and computes `tau` from the gathered losses;
    * fixed `tau` without smoothing: no communication.

    Every rank must call `forward` the same number of times (a collective per call; an empty local
    batch is allowed). The output and `.confidence` are those of the local entries, and
    `reduction='mean'` is the local mean, as for any PyTorch loss: DDP's gradient averaging then
    gives the global mean when the ranks' batches have equal sizes (otherwise scale rank `r`'s loss
    by `world_size * n_r / n_global`, as `curriculoss.harness.train` does). With `sync=False`, or
    outside a process group, or with world size 1, no collective call is made and each process keeps
    its own state. Collectives synchronise with the host, so only the distributed path does.

    Args:
        tau: `'avg'`, `'ema'` or a finite number.
        lam: $\lambda > 0$; 1 for CIFAR-10 and 0.25 for CIFAR-100 and WebVision in the paper.
        momentum: $\alpha$ of the `'ema'` threshold, in [0, 1).
        num_samples: dataset size, to enable per-sample smoothing; `None` disables it.
        smoothing: $\alpha'$ of the per-sample smoothing, in [0, 1).
        reduction: `'none'` | `'mean'` | `'sum'`.
        step: `'normalised'` (default) or `'paper'`: the batch objective, see **Step** above.
        sync: synchronise the state across the ranks of an initialised process group (see above).
        fused: compute the whole forward, the state updates (threshold, counts, smoothing buffers)
            and Eqs. 3-4 with Lambert W, as one `torch.compile`'d graph (one kernel on the CPU),
            compiled on the first call and reused for every batch size; the backward is one
            multiplication. Under distributed synchronisation the state update (with its collective)
            stays eager and only Eqs. 3-4 are compiled. Off by default: compiling takes seconds to a
            minute on a small CPU, and needs a working compiler (without one the eager code runs).

    Examples:
        >>> criterion = SuperLoss(tau="avg", lam=1.0, num_samples=50_000)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target, index = torch.randint(10, (8,)), torch.arange(8)
        >>> ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        >>> criterion(ce, index).backward()
    """

    confidence: Tensor | None
    _settings = ("tau", "lam", "momentum", "num_samples", "smoothing", "reduction", "step")

    def __init__(
        self,
        tau: str | float = "avg",
        lam: float = 1.0,
        momentum: float = 0.9,
        num_samples: int | None = None,
        smoothing: float = 0.9,
        reduction: str = "mean",
        *,
        step: str = "normalised",
        sync: bool = True,
        fused: bool = False,
    ):
        if isinstance(tau, str):
            if tau not in ("avg", "ema"):
                raise ValueError(f"tau must be 'avg', 'ema' or a finite number, got {tau!r}")
        elif isinstance(tau, bool) or not isinstance(tau, Real) or not math.isfinite(tau):
            raise ValueError(f"tau must be 'avg', 'ema' or a finite number, got {tau!r}")
        _check_lam(lam)
        for name, value in (("momentum", momentum), ("smoothing", smoothing)):
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0
        ):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
        super().__init__(reduction)
        _check_step(step)

        self.tau_mode = tau if isinstance(tau, str) else "fixed"
        self.lam = float(lam)
        self.momentum = float(momentum)
        self.num_samples = num_samples
        self.smoothing = float(smoothing)
        self.step = step
        self.sync = bool(sync)
        self.fused = bool(fused)
        fixed = 0.0 if isinstance(tau, str) else float(tau)
        # One-element (not 0-d) buffers: torch.compile (2.13) drops in-place updates of 0-d float64 buffers.
        self.register_buffer("tau", torch.full((1,), fixed, dtype=torch.float64))
        self.register_buffer("loss_sum", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(1, dtype=torch.float64))
        if num_samples is not None:
            self.register_buffer("smoothed_loss", torch.zeros(num_samples, dtype=torch.float64))
            self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))
        self.confidence = None
        self._cap_inputs = None

    def _shown(self, name: str) -> str:
        if name == "tau":  # the mode, or the fixed threshold's value
            return repr(self.tau_mode if self.tau_mode != "fixed" else f"{float(self.tau):g}")
        return super()._shown(name)

    def _check_inputs(self, loss: Tensor, index: Tensor | None, mask: Tensor | None) -> None:
        _check_loss(loss)
        if index is not None:
            if not isinstance(index, Tensor) or index.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"index must be an int64 (or int32) tensor of dataset indices, got {getattr(index, 'dtype', type(index).__name__)}")
            if index.shape != loss.shape:
                hint = (": SuperLoss takes per-sample losses, not logits; pass e.g. "
                        "F.cross_entropy(logits, target, reduction='none')"
                        if loss.dim() == 2 and index.shape == loss.shape[:1] else "")
                raise ValueError(f"index must have the shape of loss {tuple(loss.shape)}, got {tuple(index.shape)}{hint}")
            if index.device != loss.device:
                raise ValueError(f"index must be on the loss's device ({loss.device}), got {index.device}")
            if self.num_samples is None:
                raise ValueError("index was given but smoothing is off: pass num_samples=N to the constructor to smooth per sample")
        elif self.num_samples is not None and self.training:
            raise ValueError(f"index is required: smoothing is on (num_samples={self.num_samples}), so forward needs each sample's dataset index")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"mask must be a bool tensor (True = ignore), got {getattr(mask, 'dtype', type(mask).__name__)}")
            if mask.shape != loss.shape:
                raise ValueError(f"mask must have the shape of loss {tuple(loss.shape)}, got {tuple(mask.shape)}")

    def forward(self, loss: Tensor, index: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The SuperLoss of a batch of per-sample losses.

        Args:
            loss: per-sample losses (any shape).
            index: their dataset indices (a tensor shaped like `loss` on its device, or a NumPy integer
                array), required in training when smoothing is on.
            mask: `True` where an entry is ignored.

        Returns:
            The reduced $SL$ (Eq. 3).
        """
        if isinstance(index, np.ndarray) and isinstance(loss, Tensor) and np.issubdtype(index.dtype, np.integer):
            index = torch.from_numpy(index.astype(np.int64, copy=False)).to(loss.device)
        self._check_inputs(loss, index, mask)
        if loss.dtype in LOW_PRECISION:
            out = self.forward(loss.float(), index, mask)
            self.confidence = self.confidence.to(loss.dtype)
            return out.to(loss.dtype)
        state = self.loss_sum.dtype  # float64, or float32 after .float()
        if state not in MAX_LOSS:
            raise TypeError(f"SuperLoss state must be float64 (default) or float32, got {state}: after .half() "
                            "or .to(torch.bfloat16), call .float() (the losses may stay in half precision)")
        if not self.training:
            return self._evaluate(loss, index, mask)
        keep = None if mask is None else ~mask
        if index is not None:
            check_index_values(index, self.num_samples, both_ends=self.fused)
        # Python-level check of the process group: the single-process path has no collective, no sync.
        sync = self.sync and is_distributed()
        if self.fused and not sync:
            out = self._fused_step(loss, index, keep)
            if out is not None:
                return out
        return self._eager_step(loss, index, keep, sync)

    def _smoothing_buffers(self, index: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """(smoothed losses, seen flags) when this batch is smoothed (an `index` was given), else `None`s."""
        return (self.smoothed_loss, self.seen) if index is not None else (None, None)

    def _fused_step(self, loss: Tensor, index: Tensor | None, keep: Tensor | None) -> Tensor | None:
        """`fused=True`: the state update and Eqs. 3-4 as one compiled graph, without autograd, the
        output given its gradient by `Precomputed`; `None` where it cannot run compiled."""
        detached = loss.detach()
        with torch.no_grad():
            result = call_compiled(fused_step, False, loss.device.type, detached, index, keep,
                                   *self._smoothing_buffers(index), self.loss_sum, self.count, self.tau,
                                   self.tau_mode, self.momentum, self.smoothing, self.lam, precision_of(loss.dtype),
                                   self.reduction, loss.dtype, self.step == "normalised", mark=(detached, index, keep))
        if result is None:
            return None
        out, sigma, factor, source, tau = result
        self.confidence = sigma
        self._cap_inputs = (detached if source is None else source, tau, keep)
        return Precomputed.apply(loss, out, factor)

    def _eager_step(self, loss: Tensor, index: Tensor | None, keep: Tensor | None, sync: bool) -> Tensor:
        """The state update (over the process group's global batch when `sync`), then Eqs. 3-4 in one
        autograd node."""
        normalise = self.step == "normalised"
        # The state is updated without autograd (no detach needed); every step below is one tensor
        # operation, because at small batch sizes their count, not their arithmetic, is the cost.
        with torch.no_grad():
            if sync:
                source, tau = synced_state(self, loss, index, keep)
            else:
                source, tau = local_state(loss, index, keep, *self._smoothing_buffers(index), self.loss_sum,
                                          self.count, self.tau, self.tau_mode, self.momentum, self.smoothing)
        # Under synchronisation the step's constant is the global batch's (a collective, outside the node).
        out, sigma = SuperLossFunction.apply(loss, source, tau, self.lam, self.reduction, keep, self.fused,
                                             normalise and not sync)
        if normalise and sync:
            out = out * global_step_scale(sigma, keep, self.loss_sum.dtype)
        self.confidence = sigma
        # kept for .at_cap, computed only when asked (no operation added to the step)
        self._cap_inputs = (loss.detach() if source is None else source, tau, keep)
        return out

    def _evaluate(self, loss: Tensor, index: Tensor | None, mask: Tensor | None) -> Tensor:
        """`eval()` mode: Eqs. 3-4 with the current threshold and smoothed losses; no buffer changes,
        no collective."""
        keep = None if mask is None else ~mask
        source, tau = None, self.tau
        if index is not None:
            check_index_values(index, self.num_samples, both_ends=True)
            with torch.no_grad():
                valid = valid_entries(loss, keep, self.loss_sum.dtype)
                source, _, _ = smooth(loss, index, valid, self.smoothed_loss, self.seen, self.smoothing)
        tau = tau_for(loss, index, tau)
        out, sigma = SuperLossFunction.apply(loss, source, tau, self.lam, self.reduction, keep, False,
                                             self.step == "normalised")
        self.confidence = sigma
        self._cap_inputs = (loss.detach() if source is None else source, tau, keep)
        return out

    @property
    def at_cap(self) -> Tensor | None:
        """Where the last batch's beta was at or below the cap -2/e (sigma* = e); bool, shaped like the loss."""
        if self._cap_inputs is None:
            return None
        source, tau, keep = self._cap_inputs
        capped = (source - tau.to(source.dtype)) / self.lam <= -2.0 / math.e  # NaN compares False
        return capped if keep is None else capped & keep

