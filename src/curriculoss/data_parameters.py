r"""Data Parameters (Saxena, Tuzel & DeCoste, NeurIPS 2019): learnable class and instance temperatures.

Every class `c` and every training sample `i` owns a temperature; during training the logits of
sample `i` are divided by its effective parameter `sigma*_i` before the softmax cross-entropy:

$$
L^i = -\log \operatorname{softmax}(z^i / \sigma^*_i)_{y^i}, \qquad
\sigma^*_i = \begin{cases}
    \sigma^{class}_{y^i} & \text{level='class' (Sec. 2.1, Eq. 1)} \\
    \sigma^{inst}_i & \text{level='instance' (Sec. 2.2)} \\
    \sigma^{class}_{y^i} + \sigma^{inst}_i & \text{level='joint' (Sec. 2.2)}
\end{cases}
$$

Every logit of the sample is divided by the *same* parameter (an erratum of the paper's
transcription: its Eq. 1 misprints `sigma_j` under `z_j`, where the text, Eq. 3 and Eq. 4 all require
the target class's parameter under every logit). The gradients are Eq. 3, $\partial L^i/\partial z^i_j = (p^i_j - 1[j=y^i])/\sigma^*_i$, and Eq. 4/5,
$\partial L^i/\partial\sigma^*_i = (1-p^i_{y^i})/\sigma^{*2}_i\,(z^i_{y^i} - \sum_{j\ne y^i} q^i_j z^i_j)$
with $q^i_j = p^i_j/(1-p^i_{y^i})$. At inference the model's logits are used as they are
(Sec. 2.2, "Inference with data parameters"): data parameters exist only for training samples.

**Implementation (Sec. 3.1)**

- The learnable tensors are `log sigma` (`log_class_sigma` of shape `(num_classes,)` and
  `log_instance_sigma` of shape `(num_instances,)`); `class_sigma` / `instance_sigma` give
  `sigma` (detached).
- Initial values (Sec. 3.1, and an erratum of the paper's transcription): 1 for the level that is learned alone; in the joint
  curriculum class parameters start at 1 and instance parameters at 0.001, so `sigma*` starts at
  about 1 (the ordinary softmax).
- `DataParameters.optimizer` returns a `SparseSGD`: SGD with momentum on `log sigma`,
  weight decay as an L2 penalty on `log sigma`, and for every class or instance absent from the
  mini-batch nothing changes (parameter, momentum buffer, no weight decay). The forward pass gathers
  the rows of the batch through an autograd function whose backward returns a *sparse* (COO) gradient
  with one entry per sample, so neither the backward pass nor the step touches the other rows:
  cost O(batch), independent of `num_instances`.

**What the reference implementation (github.com/apple/ml-data-parameters) does, and what we do**

- **Clamping.** After every optimizer step it projects `log sigma` (class and instance tensors
  separately, the whole tensor) onto `[log(1/20), log(20)]`, i.e. `sigma` in `[0.05, 20]`; this
  is on by default (`--skip_clamp_data_param` turns it off) and the bounds are the same in its CIFAR
  and ImageNet scripts. We match it: `clamp=(0.05, 20.0)` (in `sigma` units, `None` disables)
  is a projection of the parameter after each step, not a clamp inside the forward (the gradient is
  never zeroed by it). Rows the step updates are projected; because the reference projects the whole
  tensor, a value initialised outside the range (the joint curriculum's 0.001 < 0.05 !) is lifted to
  the bound by its first step. We reproduce that with one projection of the whole tensor at each
  parameter's first step (a single O(N) pass, never again): from then on every row is in range and
  only updated rows can leave it, so projecting those is exactly the reference's projection.
- **Initialisation.** `log(init)` broadcast to every row (its defaults are 1 and 1; the paper's
  joint runs use class 1 / instance 0.001, an erratum of the paper's transcription).
- **Weight decay.** Its SGD runs with `weight_decay=0` and it adds `0.5 * wd * sum(log_sigma**2)`
  over the parameters *gathered for the mini-batch* to the loss (in its training loop),
  so a class present `n_c` times in the batch is decayed by `n_c * wd * log sigma_c` and an
  instance that appears twice, twice. That is our default, `weight_decay_mode='per_sample'`: the
  optimizer counts each row's occurrences in the (uncoalesced) sparse gradient, one entry per
  gathered sample, O(batch). The paper's hyper-parameters were tuned with it, and it is much the
  stronger decay for classes (about B / C times): with the weaker one a class parameter of the joint
  curriculum can run away to the clamp. `weight_decay_mode='per_row'` is standard L2 weight decay,
  `wd * log sigma_r` once per present row and step (Sec. 3.1 read as an L2 regulariser on
  `log sigma`). A dense gradient (`torch.compile`) carries no counts: `'per_sample'` with a
  non-zero decay then raises an error that says to use `'per_row'`.
- **Which rows are "present".** Its `SparseSGD` runs a dense SGD step on the whole tensor and then
  reverts parameter and momentum wherever the gradient is exactly zero (O(N) per step, and a present
  row whose gradient happens to be exactly 0 is treated as absent). We use the rows of the batch.
  Its momentum buffer starts at zero, so a row's first update uses `buf = grad` as ours does.
- **Class-parameter gradient.** It backpropagates `F.cross_entropy` (batch mean) through
  `class_parameters[target]`, so class `c` receives
  `(1/B) * sum_{i in batch, y_i = c} dL_i/d log sigma_c`: its samples' per-sample gradients summed and divided by the batch size, i.e. the
  mean over the class's samples weighted by the class's share `n_c / B` of the batch. That is our
  default, `class_grad='batch_mean'`, because the paper's learning rates were tuned with it.
  `class_grad='class_mean'` steps with the plain mean over the class's samples in the batch
  (the optimizer rescales the class gradient by `B / n_c`, `B` = samples that contributed to the
  gradient, `n_c` = those of class `c`), the literal reading of Sec. 2.2 ("class parameters
  average the gradient from all samples of the class present in a mini-batch"). It makes class steps
  about C times larger: divide `class_lr` accordingly (measured on digits at 40 % noise, joint
  curriculum, class_lr 0.1, 8 epochs: final test accuracy 0.90 with 'batch_mean', 0.64 with
  'class_mean', whose class parameters run to the clamp). Autograd itself is left exact in both
  modes: `.grad` holds the true gradient of the loss (Eqs. 4-5); only the step rescales. An
  instance receives `(1/B) dL_i/d log sigma_i` from its own sample only.

**Detection (Sec. 3.3).**
`DataParameters.forward_detection`
`(logits (A, C), anchor_target (A,), anchor_box (A,), box_index (M,))`: `box_index` holds the dataset-wide ids (rows of the instance parameters) of
the `M` ground-truth boxes of the mini-batch, `anchor_box` the position in `box_index` of the
box each anchor is assigned to, or `-1` for a background (negative) anchor. Anchors assigned to a
box divide their logits by that box's parameter (plus the class parameter of `anchor_target` in the
joint curriculum); background anchors use the mean instance parameter of the `M` boxes of the
mini-batch (each box counted once). The mean is detached by default (`background_grad=False`), so a
box's parameter learns only from the anchors assigned to it, as the paper's per-instance curriculum
intends. A mini-batch with no box (`M = 0`) gives background anchors the initial instance value.

**Synchronisation and validation.** `forward` only reads metadata (shapes, dtypes, devices) except for the range check of `target`,
`index` and the detection indices, which is done on CPU tensors in eager mode (a host-side
comparison, no device synchronisation), and skipped on meta tensors, under `torch.compile` and on
accelerators (where it would synchronise; set `check_values=True` to force it). In the training
forward (eager, gradients on) the CPU check of `target` and `index` is made by the parameters'
`index_select` itself, which refuses a value out of range before anything changes; the check then
runs to name the argument and its range. A `target` that the level does not use (`'instance'`)
is left to the cross-entropy that follows, which refuses it too. Under
`torch.compile` the gather uses a dense gradient (AOTAutograd cannot trace sparse tensors); the
optimizer then treats rows with a non-zero gradient as present (the reference's rule, O(N)).

**Distributed training.** Do not wrap `DataParameters` in `DistributedDataParallel` (its gradients are sparse; wrap
the model only): `SparseSGD` synchronises it. When a process group with more than one process
is initialised, each `step` gathers every rank's sparse gradient entries (row, value), O(global
batch) communication, and applies the combined update on every rank, so parameters and momentum
buffers stay identical on every rank and equal to one process fed the global batch (class-parameter
gradients are thereby reduced across ranks, and `class_grad='class_mean'` counts the class's samples
over the global batch). The rule for the loss is DDP's: each rank backpropagates the mean loss of
its own samples (scaled by `world_size * n_local / n_global` when the local batches differ in size),
and the gradients are *averaged* over the ranks. `forward` itself never communicates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from curriculoss._sparse import WEIGHT_DECAY_MODES, HiddenParameters, ScaledLogits, SparseSGD, check_hparam, gather

__all__ = ["DataParameters", "SparseSGD", "WEIGHT_DECAY_MODES"]

LEVELS = ("class", "instance", "joint")


def _is_compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _on(index: Tensor, weight: Tensor) -> Tensor:
    """`index` on `weight`'s device (no operation when it is there already)."""
    return index if index.device == weight.device else index.to(weight.device)


def _check_index(name: str, x: Tensor | None, size: int, *, required: bool = True) -> None:
    if x is None:
        if required:
            raise ValueError(f"{name} is required for this level of data parameters")
        return
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype (e.g. torch.long), got {x.dtype}")
    if x.dim() != 1 or x.shape[0] != size:
        raise ValueError(f"{name} must have shape ({size},), got {tuple(x.shape)}")


def _check_range(name: str, x: Tensor | None, low: int, high: int, force: bool | None) -> None:
    """Values in [low, high); only where it costs no device synchronisation (see module docstring)."""
    if x is None or x.numel() == 0 or x.device.type == "meta" or _is_compiling():
        return
    if force is False or (force is None and x.device.type != "cpu"):
        return
    lo, hi = (int(v) for v in torch.aminmax(x))
    if lo < low or hi >= high:
        raise ValueError(f"{name} must have values in [{low}, {high}), got values in [{lo}, {hi}]")


class DataParameters(HiddenParameters):
    r"""Learnable class- and/or instance-level temperatures on the logits (Saxena et al. 2019).

    `F.cross_entropy(dp(logits, target, index), target)` is Eq. 1 (`level='class'`) or Eq. 1
    with `sigma*_i` (instance / joint, Sec. 2.2); its gradients are Eqs. 3-5. At inference, use the
    model's logits as they are (Sec. 2.2): data parameters are not applied to test samples.

    Args:
        num_classes: number of classes `k` (rows of the class parameters; required for the
            `'class'` and `'joint'` levels, otherwise only used to check `logits`).
        num_instances: number of training samples `N` (or ground-truth boxes for detection);
            required for `'instance'` and `'joint'`.
        level: `'instance'` (default, the command line's and the paper's choice under label noise,
            Sec. 3.4), `'class'` or `'joint'` (`sigma*_i = sigma^class_{y_i} + sigma^inst_i`).
        init_class: initial class `sigma` (default 1, Sec. 3.1).
        init_instance: initial instance `sigma` (default 1 for `'instance'`, 0.001 for `'joint'`:
            Sec. 3.1, and an erratum of the paper's transcription).
        clamp: `(min, max)` range of `sigma` that [`SparseSGD`][curriculoss.SparseSGD] projects the parameters onto
            after every step (default `(1/20, 20)`, the reference implementation's); `None` to
            disable. See the module docstring for the exact semantics.
            Under `torch.distributed` the optimizer keeps every rank's parameters identical (see
            `SparseSGD`); `forward` makes no collective call.
        check_values: range-check `target`/`index` values in `forward`: `None` (default) on CPU
            tensors only (no device sync), `True` everywhere (syncs on accelerators), `False` never.

    Shape:
        - logits: `(B, C)`, target: `(B,)` integer in `[0, C)`, index: `(B,)` integer in
          `[0, N)` (may be `None` for `level='class'`). Output: `(B, C)`.

    **Your model's optimizer**: the learnable tensors are not in `parameters()` (of this module, or of a
    model that holds it as a submodule), so `AdamW(model.parameters())`, SGD with momentum and weight
    decay, gradient clipping, `model.zero_grad()`, `DistributedDataParallel(model)`, Lightning's
    and the Hugging Face `Trainer`'s optimizers never see them: their gradients are sparse, which
    Adam and dense weight decay refuse, and their update is `SparseSGD`'s own (Sec. 3.1). They
    are trained only by `optimizer` (step it, and zero its gradients, next to your optimizer),
    and still follow `.to()` and appear in `state_dict()` under their names, so a checkpoint of the
    model holds them. `data_parameters` lists them. Of the alternatives, a dense gradient would
    cost O(N) per step and let the model's optimizer (Adam's moments, its weight decay) update them
    too, and a parameter-group helper would leave every framework that collects `parameters()` to
    crash.

    After each training forward, `.last_sigma` holds the batch's `sigma*_i` as the forward used
    them (detached, `(B,)`): the per-sample confidence to record (e.g.
    `Recorder.update(..., confidence=dp.last_sigma)`).

    **Training and evaluation**: in `eval()` mode `forward` and `forward_detection` return
    the logits as they are (inference uses no data parameters, Sec. 2.2), so a validation step may
    call the module as the training step does.

    Examples:
        >>> dp = DataParameters(10, 1000)
        >>> opt = dp.optimizer()
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> y, idx = torch.randint(10, (8,)), torch.randint(1000, (8,))
        >>> F.cross_entropy(dp(logits, y, idx), y).backward()
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(self, num_classes: int | None, num_instances: int | None = None, level: str = "instance",
                 init_class: float | None = None, init_instance: float | None = None,
                 clamp: tuple[float, float] | None = (1.0 / 20.0, 20.0), check_values: bool | None = None,
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        uses_class = level in ("class", "joint")
        uses_inst = level in ("instance", "joint")
        if uses_class and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int for level={level!r}, got {num_classes!r}")
        if uses_inst and (not isinstance(num_instances, int) or num_instances < 1):
            raise ValueError(f"num_instances must be a positive int for level={level!r}, got {num_instances!r}")
        if init_class is None:
            init_class = 1.0
        if init_instance is None:
            init_instance = 0.001 if level == "joint" else 1.0
        for name, v in (("init_class", init_class), ("init_instance", init_instance)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if clamp is not None:
            if len(clamp) != 2 or not (0 < clamp[0] < clamp[1] < math.inf):
                raise ValueError(f"clamp must be None or (min, max) with 0 < min < max < inf, got {clamp!r}")
            clamp = (float(clamp[0]), float(clamp[1]))
        self.num_classes = num_classes
        self.num_instances = num_instances
        self.level = level
        self.init_class = float(init_class)
        self.init_instance = float(init_instance)
        self.clamp = clamp
        self.check_values = check_values
        kw = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        # Kept out of nn.Module's registry (see "Your model's optimizer" in the class docstring); the
        # base, HiddenParameters, gives them to .to(), state_dict() and load_state_dict() as parameters.
        self._data_params: dict[str, nn.Parameter | None] = {
            "log_class_sigma": nn.Parameter(torch.full((num_classes,), math.log(init_class), **kw)) if uses_class else None,
            "log_instance_sigma": (nn.Parameter(torch.full((num_instances,), math.log(init_instance), **kw))
                                   if uses_inst else None),
        }
        self.last_sigma: Tensor | None = None

    @property
    def log_class_sigma(self) -> nn.Parameter | None:
        """The learnable `log sigma^class`, `(num_classes,)`; `None` for `level='instance'`."""
        return self._data_params["log_class_sigma"]

    @property
    def log_instance_sigma(self) -> nn.Parameter | None:
        """The learnable `log sigma^inst`, `(num_instances,)`; `None` for `level='class'`."""
        return self._data_params["log_instance_sigma"]

    def data_parameters(self) -> list[nn.Parameter]:
        """The learnable tensors, which `parameters()` does not list: for `optimizer` or a
        `SparseSGD` of your own."""
        return [p for p in self._data_params.values() if p is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the data parameters' gradients too (`model.zero_grad()` does not reach them: the
        optimizer's `zero_grad()` does)."""
        super().zero_grad(set_to_none)
        for p in self.data_parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_instances={self.num_instances}, level={self.level!r}, "
                f"init_class={self.init_class}, init_instance={self.init_instance}, clamp={self.clamp}")

    # ------------------------------------------------------------------ views
    @property
    def class_sigma(self) -> Tensor | None:
        """`sigma^class` (detached), `(num_classes,)`; `None` for `level='instance'`."""
        return None if self.log_class_sigma is None else self.log_class_sigma.detach().exp()

    @property
    def instance_sigma(self) -> Tensor | None:
        """`sigma^inst` (detached), `(num_instances,)`; `None` for `level='class'`."""
        return None if self.log_instance_sigma is None else self.log_instance_sigma.detach().exp()

    # ------------------------------------------------------------------ checks
    def _check(self, batch: int, target: Tensor | None, index: Tensor | None, num_logits: int | None,
               gathered: bool = False) -> None:
        """Metadata, then the values' ranges (see `check_values`). `gathered`: the caller gathers
        the parameters with `index_select`, which refuses an index out of range on the CPU before
        anything changes; the CPU range checks (a reduction and two host reads each) are then left to
        it, and the caller runs this check again without `gathered` to name the argument."""
        uses_class = self.log_class_sigma is not None
        uses_inst = self.log_instance_sigma is not None
        _check_index("target", target, batch, required=uses_class)
        _check_index("index", index, batch, required=uses_inst)
        k = self.num_classes if self.num_classes is not None else num_logits
        if num_logits is not None and self.num_classes is not None and num_logits != self.num_classes:
            raise ValueError(f"logits must have {self.num_classes} columns (num_classes), got {num_logits}")
        force = self.check_values
        # Left to the gather where it refuses bad values: on the CPU, unless forced either way. (An
        # instance-level forward does not use target: the cross-entropy after it checks it.)
        deferred = gathered and force is None
        if k is not None and not (deferred and (not uses_class or self.log_class_sigma.device.type == "cpu")):
            _check_range("target", target, 0, k, force)
        if uses_inst and not (deferred and self.log_instance_sigma.device.type == "cpu"):
            _check_range("index", index, 0, self.num_instances, force)

    @staticmethod
    def _check_logits(logits: Tensor) -> None:
        if not isinstance(logits, Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        if logits.dim() != 2 or not logits.dtype.is_floating_point:
            raise ValueError(f"logits must be a floating tensor of shape (B, C), got {logits.dtype} "
                             f"of shape {tuple(logits.shape)}")

    # ------------------------------------------------------------------ sigma
    def _sigma(self, target: Tensor | None, index: Tensor | None) -> Tensor:
        parts = []
        if self.log_class_sigma is not None:
            parts.append(gather(self.log_class_sigma, _on(target, self.log_class_sigma)).exp())
        if self.log_instance_sigma is not None:
            parts.append(gather(self.log_instance_sigma, _on(index, self.log_instance_sigma)).exp())
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def sigma(self, target: Tensor | None, index: Tensor | None = None) -> Tensor:
        """`sigma*_i` of the samples, shape `(B,)` (differentiable; `index` unused for 'class')."""
        ref = target if target is not None else index
        if ref is None:
            raise ValueError("target or index is required")
        batch = ref.shape[0] if isinstance(ref, Tensor) and ref.dim() >= 1 else -1
        self._check(batch, target, index, None)
        return self._sigma(target, index)

    def forward(self, logits: Tensor, target: Tensor | None, index: Tensor | None = None) -> Tensor:
        """Logits divided row-wise by `sigma*_i`: `logits / sigma*[:, None]` (Eq. 1 / Sec. 2.2) in
        `train()` mode; in `eval()` mode the logits as they are (Sec. 2.2: data parameters exist for
        training samples only), whatever `target` and `index` hold."""
        self._check_logits(logits)
        if not self.training:
            return logits
        wc, wi = self.log_class_sigma, self.log_instance_sigma
        if (not _is_compiling() and torch.is_grad_enabled() and logits.device.type != "meta"
                and all(w is None or w.requires_grad for w in (wc, wi))):
            self._check(logits.shape[0], target, index, logits.shape[1], gathered=True)
            # One autograd node with sparse gradients (see ScaledLogits).
            try:
                out, s = ScaledLogits.apply(logits, wc, None if wc is None else _on(target, wc),
                                             wi, None if wi is None else _on(index, wi))
            except IndexError:  # a CPU index_select refused a value: say which argument, and its range
                self._check(logits.shape[0], target, index, logits.shape[1])
                raise
            self.last_sigma = s
            return out
        self._check(logits.shape[0], target, index, logits.shape[1])
        s = self._sigma(target, index)
        if not _is_compiling():
            self.last_sigma = s.detach()
        return logits / s.unsqueeze(1).to(logits.dtype)

    # ------------------------------------------------------------------ detection (Sec. 3.3)
    def sigma_detection(self, anchor_target: Tensor, anchor_box: Tensor, box_index: Tensor,
                        background_grad: bool = False) -> Tensor:
        """Per-anchor `sigma*` for detection, shape `(A,)` (see `forward_detection`)."""
        if not isinstance(anchor_box, Tensor):
            raise TypeError(f"anchor_box must be a torch.Tensor, got {type(anchor_box).__name__}")
        a = anchor_box.shape[0] if anchor_box.dim() == 1 else -1
        _check_index("anchor_target", anchor_target, a, required=self.log_class_sigma is not None)
        _check_index("anchor_box", anchor_box, a)
        if not isinstance(box_index, Tensor) or box_index.dim() != 1:
            raise ValueError(f"box_index must be a 1-D integer tensor, got {box_index!r:.80}")
        m = box_index.shape[0]
        _check_index("box_index", box_index, m)
        if self.num_classes is not None:
            _check_range("anchor_target", anchor_target, 0, self.num_classes, self.check_values)
        _check_range("anchor_box", anchor_box, -1, m, self.check_values)
        parts = []
        if self.log_class_sigma is not None:
            parts.append(gather(self.log_class_sigma, anchor_target.to(self.log_class_sigma.device)).exp())
        if self.log_instance_sigma is not None:
            w = self.log_instance_sigma
            _check_range("box_index", box_index, 0, self.num_instances, self.check_values)
            ab = anchor_box.to(w.device)
            if m == 0:
                inst = torch.full(ab.shape, self.init_instance, dtype=w.dtype, device=w.device)
            else:
                s_box = gather(w, box_index.to(w.device)).exp()
                bg = s_box.mean()
                if not background_grad:
                    bg = bg.detach()
                inst = torch.where(ab >= 0, s_box.index_select(0, ab.clamp(min=0)), bg)
            parts.append(inst)
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def forward_detection(self, logits: Tensor, anchor_target: Tensor, anchor_box: Tensor, box_index: Tensor,
                          background_grad: bool = False) -> Tensor:
        """Detection variant (Sec. 3.3): anchor logits divided by their box's parameter.

        Args:
            logits: `(A, C)` classification logits of the `A` anchors of the mini-batch.
            anchor_target: `(A,)` class of each anchor (the background class for negatives).
            anchor_box: `(A,)` integer in `[-1, M)`: position in `box_index` of the box the anchor
                is assigned to, `-1` for background anchors.
            box_index: `(M,)` dataset-wide ids in `[0, num_instances)` of the mini-batch's boxes.
            background_grad: let background anchors' gradient flow into the boxes' mean parameter.

        Positive anchors use their box's `sigma^inst` (+ `sigma^class` of their class when joint);
        background anchors use the mean `sigma^inst` over the `M` boxes (+ their class parameter when
        joint). Use `F.cross_entropy(dp.forward_detection(...), anchor_target)`.
        """
        self._check_logits(logits)
        if not self.training:
            return logits
        if anchor_box.dim() != 1 or anchor_box.shape[0] != logits.shape[0]:
            raise ValueError(f"anchor_box must have shape ({logits.shape[0]},), got {tuple(anchor_box.shape)}")
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have {self.num_classes} columns (num_classes), got {logits.shape[1]}")
        s = self.sigma_detection(anchor_target, anchor_box, box_index, background_grad)
        if not _is_compiling():
            self.last_sigma = s.detach()
        return logits / s.unsqueeze(1).to(logits.dtype)

    # ------------------------------------------------------------------ optimizer
    def optimizer(self, class_lr: float = 0.1, instance_lr: float = 1.0, momentum: float = 0.9,
                  class_weight_decay: float = 5e-4, instance_weight_decay: float = 0.0,
                  class_grad: str = "batch_mean", weight_decay_mode: str = "per_sample") -> "SparseSGD":
        """A `SparseSGD` over this module's parameters (Sec. 3.1), with the clamp range of the module.

        The defaults are the command line's. Rates and weight decays must be finite and >= 0,
        `momentum` in [0, 1).

        Args:
            class_lr: class learning rate; default 0.1 (the reference implementation's).
            instance_lr: instance learning rate; default 1 (selected on validation splits of the digits
                and MNIST, LeNet-5 and an MLP at SGD lr 0.01 / 0.03, clean and 40 % noisy labels:
                0.1 / 1 / 10 gave 49.5 / 50.1 / 52.7 % mean final validation accuracy over 240 runs, but
                10 collapsed in 3 runs of the 100-epoch check, 1 in none; the paper uses 0.1 / 0.8 on
                ImageNet and 0.2 for instances under label noise with its own schedules).
            momentum: default 0.9 (Sec. 3.1).
            class_weight_decay: weight decay of the class parameters.
            instance_weight_decay: weight decay of the instance parameters.
            class_grad: `'batch_mean'` (default, the reference implementation's: the class's per-sample
                gradients summed over the batch / batch size) or `'class_mean'` (their mean over the
                class's samples in the batch, Sec. 2.2 read literally; scale `class_lr` down about C
                times); see the module docstring.
            weight_decay_mode: `'per_sample'` (default, the reference implementation's: the L2 penalty
                counted once per occurrence of a class or instance in the mini-batch) or `'per_row'`
                (once per present row).
        """
        for name, value in (("class_lr", class_lr), ("instance_lr", instance_lr),
                            ("class_weight_decay", class_weight_decay),
                            ("instance_weight_decay", instance_weight_decay)):
            check_hparam(name, value)
        check_hparam("momentum", momentum, momentum=True)
        log_clamp = None if self.clamp is None else (math.log(self.clamp[0]), math.log(self.clamp[1]))
        groups = []
        if self.log_class_sigma is not None:
            groups.append({"params": [self.log_class_sigma], "lr": class_lr, "weight_decay": class_weight_decay,
                           "class_grad": class_grad})
        if self.log_instance_sigma is not None:
            groups.append({"params": [self.log_instance_sigma], "lr": instance_lr,
                           "weight_decay": instance_weight_decay, "class_grad": "batch_mean"})
        return SparseSGD(groups, lr=class_lr, momentum=momentum, log_clamp=log_clamp,
                         weight_decay_mode=weight_decay_mode)
