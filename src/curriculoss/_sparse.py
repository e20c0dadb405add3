"""Parameters of which a mini-batch touches a few rows, stepped at O(batch) cost.

The data parameters (`curriculoss.data_parameters`) hold one value per class or per training sample.
The gathers here (`SparseGather`, `ScaledLogits`) give them a sparse COO gradient with one entry
per gathered element, so that the backward pass never touches the other rows; `SparseSGD` steps the
rows the gradient holds; `HiddenParameters` keeps them out of `parameters()`, where a dense optimizer
would see them, while `.to()` and `state_dict()` still do.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from curriculoss.checks import check_number
from curriculoss.distributed import all_gather_cat, all_reduce_sum, is_distributed, world_size

CLASS_GRAD_MODES = ("batch_mean", "class_mean")
WEIGHT_DECAY_MODES = ("per_sample", "per_row")


class SparseGather(torch.autograd.Function):
    """`weight[index]` whose gradient w.r.t. `weight` is a sparse COO tensor with one entry per
    element of `index` (uncoalesced), so the backward costs O(len(index)), not O(len(weight))."""

    @staticmethod
    def forward(ctx, weight: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = weight.shape[0]
        return weight.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        g = torch.sparse_coo_tensor(index.unsqueeze(0), grad, (ctx.num_rows,), is_coalesced=False,
                                    check_invariants=False)
        return g, None


class ScaledLogits(torch.autograd.Function):
    """`logits / sigma*[:, None]` with `sigma* = exp(w_c[target]) (+ exp(w_i[index]))`, as one
    autograd node whose backward gives the logits `grad / sigma*` and each `log sigma` gather a
    sparse COO gradient (one entry per sample, as `SparseGather`):
    `dL/d log sigma_part = -(sum_j grad_ij out_ij) * exp(w_part) / sigma*` (Eqs. 3-5: the logits'
    derivative w.r.t. `sigma*` is `-out / sigma*`). Every step is one tensor operation: at the
    batch sizes of a training step their count is the cost."""

    @staticmethod
    def forward(ctx, logits, w_class, target, w_inst, index):  # type: ignore[override]
        parts = [(w, i) for w, i in ((w_class, target), (w_inst, index)) if w is not None]
        exps = [w.index_select(0, i).exp_() for w, i in parts]
        sigma = exps[0] if len(exps) == 1 else exps[0] + exps[1]
        col = sigma.unsqueeze(1)
        if col.dtype != logits.dtype:
            col = col.to(logits.dtype)
        out = logits / col
        ctx.save_for_backward(out, col, *exps, *(i for _, i in parts))
        ctx.parts = [(w_class is not None), (w_inst is not None)]
        ctx.mark_non_differentiable(sigma)
        ctx.set_materialize_grads(False)
        ctx.rows = [w.shape[0] for w, _ in parts]
        return out, sigma

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _):  # type: ignore[override]
        if grad is None:
            return None, None, None, None, None
        out, col, *rest = ctx.saved_tensors
        n = len(ctx.rows)
        exps, idx = rest[:n], rest[n:]
        grad_logits = grad / col if ctx.needs_input_grad[0] else None
        # d L / d log sigma* (times sigma*, one part) = -sum_j grad_ij out_ij
        g_sigma = torch.linalg.vecdot(grad, out).neg_()
        if n == 2:
            g_sigma = g_sigma / col.squeeze(1).to(g_sigma.dtype)
        grads = []
        for k in range(n):
            vals = g_sigma if n == 1 else g_sigma * exps[k]
            if vals.dtype != exps[k].dtype:
                vals = vals.to(exps[k].dtype)
            grads.append(torch.sparse_coo_tensor(idx[k].unsqueeze(0), vals, (ctx.rows[k],), is_coalesced=False,
                                                 check_invariants=False))
        it = iter(grads)
        g_class = next(it) if ctx.parts[0] else None
        g_inst = next(it) if ctx.parts[1] else None
        return grad_logits, g_class, None, g_inst, None


def gather(weight: Tensor, index: Tensor) -> Tensor:
    """`weight[index]`, through `SparseGather` where a sparse gradient is wanted and possible (eager
    mode, gradients on; AOTAutograd cannot trace sparse tensors)."""
    if (torch.compiler.is_compiling() or not torch.is_grad_enabled() or not weight.requires_grad
            or index.device.type == "meta"):
        return weight.index_select(0, index)
    return SparseGather.apply(weight, index)


def check_hparam(name: str, value: object, *, momentum: bool = False) -> float:
    """A learning rate or weight decay (finite, >= 0) or a momentum (in [0, 1)), by name: a NaN or
    negative rate would step the parameters the wrong way (or to NaN) without any error."""
    if momentum:
        return check_number(name, value, low=0.0, high=1.0, high_open=True)
    return check_number(name, value, low=0.0)


class HiddenParameters(nn.Module):
    """A Module whose parameters, in `_data_params` (name: `nn.Parameter` or `None`), are kept out of
    `parameters()`, so that the model's optimizer, its weight decay and `DistributedDataParallel` never
    see them, yet follow `.to()` (the same `Parameter` objects, moved) and are saved and restored by
    `state_dict()` under their names, as parameters are."""

    _data_params: dict[str, nn.Parameter | None]

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        with torch.no_grad():
            for p in self._data_params.values():
                if p is None:
                    continue
                p.data = fn(p.data)  # the same Parameter object: an optimizer's references stay valid
                if p.grad is not None:
                    p.grad = fn(p.grad)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, p in self._data_params.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name, p in self._data_params.items():
            key = prefix + name
            if p is None:
                continue
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor) or value.shape != p.shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(getattr(value, 'shape', ()))} from checkpoint, the shape in current "
                                  f"model is {tuple(p.shape)}.")
                continue
            with torch.no_grad():
                p.copy_(value)


class SparseSGD(torch.optim.Optimizer):
    r"""SGD with momentum for embedding-like parameters of which a mini-batch touches a few rows.

    For the rows `r` present in the (sparse COO) gradient, with `g_r` their summed gradient:

    $$
    d_r = g_r + \lambda\,w_r,\qquad b_r \leftarrow \mu\,b_r + d_r,\qquad
    w_r \leftarrow \Pi_{[lo,hi]}(w_r - \eta\,b_r)
    $$

    (PyTorch's SGD without dampening, `b` starting at 0); the other rows keep parameter and momentum
    buffer untouched and receive no weight decay. With `weight_decay_mode='per_sample'` the decay
    term is $n_r \lambda w_r$, `n_r` the number of entries of row `r` in the sparse gradient
    (its occurrences in the mini-batch): the gradient of `0.5 * wd * sum(w[index] ** 2)` added to the
    loss, as the Data Parameters reference does; `'per_row'` (the constructor's default, standard L2)
    uses $\lambda w_r$. Cost O(nnz) per step: the update runs on the gradient's entries as they
    are, a row repeated where the mini-batch repeats it, through idempotent gathers and writes (every
    copy of a row carries the same value) and one `index_add_` that sums the row's entries into the
    momentum buffer (into the parameter without momentum); no sort and no `unique` of the rows,
    except for `class_grad='class_mean'`, which needs each row's count. A dense gradient is
    accepted too: its non-zero rows are then the present ones (O(N); this is the reference
    implementation's rule, used under `torch.compile`). `log_clamp` projects the updated rows, and
    the whole tensor once at a parameter's first step (see the module docstring of
    `curriculoss.data_parameters`). `class_grad='class_mean'` rescales each row's gradient by
    `nnz / count(row)`, turning the batch mean of a class's per-sample gradients into their mean over
    that class's samples.

    **State** (`state_dict`): per parameter `momentum_buffer` (dense, allocated at the first step) and
    `step` (int).

    **Distributed** (`sync=True`, default, and a `torch.distributed` process group with more than one
    process initialised when `step` runs): every rank must call `step`, which makes one
    `all_reduce` of a (parameters x 2) int64 table saying which kind of gradient the ranks hold, then
    for each parameter with a sparse gradient on some rank one `all_gather` of the (row, value) entries
    of every rank (16 bytes per entry after a one-int64 size exchange: O(global batch), never
    O(`num_rows`)). The entries are concatenated in rank order, the values divided by the world size
    (the average over ranks, as `DistributedDataParallel` does for dense gradients), and the update
    above is applied with them on every rank: parameters, momentum buffers and step counts stay
    identical across ranks and equal the single-process result on the global batch when each rank's
    loss is its local mean (times `world_size * n_local / n_global` if local batch sizes differ).
    `class_grad='class_mean'` then uses the global `nnz` and per-row counts. A rank without a
    gradient contributes no entry; a parameter no rank has a gradient for is skipped, as in one
    process. Dense gradients (`torch.compile`) are averaged with an `all_reduce` instead, which is
    O(`num_rows`). Outside a process group, with world size 1 or with `sync=False`, no collective
    call is made.
    """

    def __init__(self, params: Iterable, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                 log_clamp: tuple[float, float] | None = None, class_grad: str = "batch_mean", *, sync: bool = True,
                 weight_decay_mode: str = "per_row"):
        check_hparam("lr", lr)
        check_hparam("momentum", momentum, momentum=True)
        check_hparam("weight_decay", weight_decay)
        if class_grad not in CLASS_GRAD_MODES:
            raise ValueError(f"class_grad must be one of {CLASS_GRAD_MODES}, got {class_grad!r}")
        if log_clamp is not None:
            log_clamp = (float(log_clamp[0]), float(log_clamp[1]))
            if not log_clamp[0] < log_clamp[1]:
                raise ValueError(f"log_clamp must be (lo, hi) with lo < hi, got {log_clamp}")
        if weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_mode!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, log_clamp=log_clamp,
                        class_grad=class_grad, weight_decay_mode=weight_decay_mode)
        super().__init__(params, defaults)
        #: synchronise across the ranks of an initialised process group (see the class docstring)
        self.sync = bool(sync)
        for i, group in enumerate(self.param_groups):
            for key in ("lr", "momentum", "weight_decay"):
                check_hparam(f"param_groups[{i}]['{key}']", group[key], momentum=key == "momentum")
            if group["class_grad"] not in CLASS_GRAD_MODES:
                raise ValueError(f"class_grad must be one of {CLASS_GRAD_MODES}, got {group['class_grad']!r}")
            if group["weight_decay_mode"] not in WEIGHT_DECAY_MODES:
                raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, "
                                 f"got {group['weight_decay_mode']!r}")
            for p in group["params"]:
                if p.dim() != 1:
                    raise ValueError(f"SparseSGD expects 1-D parameters (one value per row), got shape {tuple(p.shape)}")

    @staticmethod
    def _sparse_rows_and_grad(idx: Tensor, vals: Tensor, mode: str) -> tuple[Tensor, Tensor, bool | Tensor]:
        """The entries of a sparse gradient as the update takes them: (rows, values, True), a row
        repeated where the gradient repeats it; for `class_mean`, each row once, its summed gradient
        rescaled, and its count."""
        if mode != "class_mean":
            return idx, vals, True
        rows, inv, counts = torch.unique(idx, sorted=True, return_inverse=True, return_counts=True)
        g = torch.zeros(rows.shape[0], dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals)
        return rows, g * (idx.shape[0] / counts.to(g.dtype)), counts

    @staticmethod
    def _dense_rows_and_grad(grad: Tensor, mode: str) -> tuple[Tensor, Tensor, bool | Tensor]:
        if mode == "class_mean":
            raise ValueError("class_grad='class_mean' needs the sparse gradient of an eager DataParameters.forward; "
                             "with a dense gradient (e.g. under torch.compile) use optimizer(class_grad='batch_mean')")
        rows = grad.nonzero().squeeze(1)
        return rows, grad.index_select(0, rows), False

    @classmethod
    def _rows_and_grad(cls, grad: Tensor, mode: str) -> tuple[Tensor, Tensor, bool | Tensor]:
        """(rows, gradient values, counts): `counts` is True for a sparse gradient's entries as they
        are (rows may repeat), False for a dense gradient's non-zero rows (each once, no counts), and
        each row's count of entries for `class_mean`'s unique rows."""
        if grad.is_sparse:
            return cls._sparse_rows_and_grad(grad._indices()[0], grad._values(), mode)
        return cls._dense_rows_and_grad(grad, mode)

    def _global_rows_and_grads(self) -> list[tuple[Tensor, Tensor, Tensor | None] | None]:
        """Distributed mode: the rows and gradients of every parameter over all ranks (see the class doc)."""
        params = [(g, p) for g in self.param_groups for p in g["params"]]
        ws = world_size()
        # Which kind of gradient the ranks hold, per parameter: (any sparse, any dense), one all_reduce.
        kinds = torch.zeros(len(params), 2, dtype=torch.int64)
        for i, (_, p) in enumerate(params):
            if p.grad is not None:
                kinds[i, 0 if p.grad.is_sparse else 1] = 1
        all_reduce_sum(kinds)
        out: list[tuple[Tensor, Tensor, bool | Tensor] | None] = []
        # A CPU table read after a collective (which waits for every rank anyway): the optimizer step of
        # the distributed path only, never a loss's forward or backward.
        for (group, p), (any_sparse, any_dense) in zip(params, kinds.tolist()):
            grad, mode = p.grad, group["class_grad"]
            if any_dense:  # e.g. under torch.compile: O(N) all_reduce of the dense gradient
                dense = torch.zeros_like(p) if grad is None else (grad.to_dense() if grad.is_sparse else grad.clone())
                all_reduce_sum(dense)
                out.append(self._dense_rows_and_grad(dense.div_(ws), mode))
            elif any_sparse:  # O(global batch): every rank's (row, value) entries, in rank order
                if grad is None:
                    idx = torch.zeros(0, dtype=torch.int64, device=p.device)
                    vals = torch.zeros(0, dtype=p.dtype, device=p.device)
                else:
                    idx, vals = grad._indices()[0], grad._values()
                packed = torch.stack([idx.to(torch.float64), vals.to(torch.float64)], 1)
                packed = all_gather_cat(packed)
                vals = (packed[:, 1] / ws).to(p.dtype)
                out.append(self._sparse_rows_and_grad(packed[:, 0].to(torch.int64), vals, mode))
            else:
                out.append(None)
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Python-level check of the process group: the single-process path makes no collective call.
        reduced = iter(self._global_rows_and_grads()) if self.sync and is_distributed() else None
        for group in self.param_groups:
            lr, mom, wd, clamp = group["lr"], group["momentum"], group["weight_decay"], group["log_clamp"]
            for p in group["params"]:
                if reduced is not None:
                    rows_grad = next(reduced)
                    if rows_grad is None:
                        continue
                    rows, g, counts = rows_grad
                else:
                    if p.grad is None:
                        continue
                    rows, g, counts = self._rows_and_grad(p.grad, group["class_grad"])
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    if mom != 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                first = state["step"] == 0
                # .get: checkpoints from before the option had per-row decay
                self._update(p, state, rows, g, counts, lr, mom, wd, group.get("weight_decay_mode", "per_row"), clamp)
                if clamp is not None and first:
                    p.clamp_(clamp[0], clamp[1])
                state["step"] += 1
        return loss

    @staticmethod
    def _update(p: Tensor, state: dict, rows: Tensor, g: Tensor, counts: bool | Tensor, lr: float, mom: float,
                wd: float, wd_mode: str, clamp: tuple[float, float] | None) -> None:
        """The update of the class docstring on `rows`, which may repeat (`counts` True: a sparse
        gradient's entries, summed per row here). What is written per row (momentum times the buffer,
        the per-row decay, the new value) is the same for every copy of the row, so writes through
        repeated rows are well defined; the entries' sum enters through one `index_add_`."""
        w = p.index_select(0, rows)
        d = g if g.dtype == p.dtype else g.to(p.dtype)
        per_row = False  # the decay once per row, lambda w_r, applied below
        if wd != 0:
            if wd_mode != "per_sample":
                per_row = True
            elif counts is False:
                raise ValueError(
                    "weight_decay_mode='per_sample' counts each row's occurrences in the sparse gradient "
                    "of an eager DataParameters.forward; with a dense gradient (e.g. under torch.compile) "
                    "use optimizer(weight_decay_mode='per_row') or a zero weight decay")
            elif counts is True:  # n_r lambda w_r: lambda w_r with each of the row's entries
                d = torch.add(d, w, alpha=wd)
            else:  # class_mean's unique rows and their counts
                d = d + (wd * counts.to(w.dtype)) * w
        if mom != 0:
            buf = state["momentum_buffer"]
            b = buf.index_select(0, rows).mul_(mom)
            if per_row:
                b.add_(w, alpha=wd)
            buf.index_copy_(0, rows, b)  # mu b_r (+ lambda w_r): the same value for each copy of r
            buf.index_add_(0, rows, d)  # + the row's entries: b_r = mu b_r + d_r
            w.add_(buf.index_select(0, rows), alpha=-lr)  # w is a fresh gather: updated in place
        else:
            if per_row:
                p.index_copy_(0, rows, w.mul(1.0 - lr * wd))
            p.index_add_(0, rows, d, alpha=-lr)
            if clamp is None:
                return
            w = p.index_select(0, rows)
        if clamp is not None:
            w.clamp_(clamp[0], clamp[1])
        p.index_copy_(0, rows, w)
