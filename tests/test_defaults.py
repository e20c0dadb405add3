"""The command line's defaults: learning rate per model, 3 seeds for bench, SuperLoss's normalised step."""
from curriculoss.harness.arguments import build_config
from curriculoss.harness.cli import build_parser
from curriculoss.harness.models import DEFAULT_LR, MODELS


def _cfg(*argv):
    args = build_parser().parse_args(["train", *argv])
    return build_config(args, args.method, args.noise_rate, args.seed)


def test_learning_rate_defaults_per_model_and_a_given_lr_wins():
    assert set(DEFAULT_LR) <= set(MODELS)
    for model in MODELS:
        # the selected rates; models not selected (the WideResNets) take the papers' CIFAR rate, 0.1
        assert _cfg("--model", model).lr == DEFAULT_LR.get(model, 0.1)
        assert _cfg("--model", model, "--lr", "0.005").lr == 0.005


def test_bench_runs_three_seeds_by_default():
    assert build_parser().parse_args(["bench"]).seeds == [0, 1, 2]


def test_superloss_step_defaults_to_normalised():
    assert _cfg("--method", "superloss").options.sl_normalise is True
    assert _cfg("--method", "superloss", "--sl-step", "paper").options.sl_normalise is False


def test_data_parameter_defaults_and_flags_reach_the_optimizer():
    """The command line's data-parameter defaults are the library harness's (instance level, instance lr
    1, weight decay per occurrence), and each flag lands in the SparseSGD's parameter groups."""
    from curriculoss.harness.methods import MethodOptions, build_method

    options = _cfg("--method", "data-params").options
    assert options == MethodOptions(sl_normalise=True, smoothing=0.9)
    method = build_method("data-params", options, num_classes=10, num_samples=100)
    (group,) = method.make_optimizer().param_groups  # instance level: the instance parameters only
    assert (group["lr"], group["weight_decay"]) == (1.0, 0.0)
    options = _cfg("--method", "data-params", "--dp-level", "joint", "--dp-instance-lr", "0.5",
                   "--dp-instance-weight-decay", "1e-3", "--dp-class-weight-decay", "2e-3").options
    groups = build_method("data-params", options, num_classes=10, num_samples=100).make_optimizer().param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.1, 2e-3), (0.5, 1e-3)]


def _default(fn, name):
    import inspect

    return inspect.signature(fn).parameters[name].default


def test_every_library_default_is_the_command_lines():
    """A user who builds the methods with the library's defaults gets what `curriculoss train` runs."""
    from curriculoss import IMAE, DataParameters, SuperLoss

    args = build_parser().parse_args(["train"])
    assert _default(SuperLoss, "tau") == args.tau and _default(SuperLoss, "lam") == args.lam
    assert _default(SuperLoss, "smoothing") == 0.9 and not args.no_smoothing
    assert _default(SuperLoss, "step") == args.sl_step == "normalised"
    assert _default(DataParameters, "level") == args.dp_level
    optimizer = DataParameters.optimizer
    assert _default(optimizer, "class_lr") == args.dp_class_lr
    assert _default(optimizer, "instance_lr") == args.dp_instance_lr
    assert _default(optimizer, "class_weight_decay") == args.dp_class_weight_decay
    assert _default(optimizer, "instance_weight_decay") == args.dp_instance_weight_decay
    assert _default(optimizer, "weight_decay_mode") == args.dp_weight_decay_mode
    assert _default(IMAE, "T") == args.imae_T


def test_library_superloss_and_the_command_line_take_the_same_step():
    """The same batch through `SuperLoss()` (library defaults) and through the method `curriculoss train
    --method superloss` builds from its default options: the same gradient w.r.t. the per-sample losses."""
    import torch

    from curriculoss import SuperLoss
    from curriculoss.harness.methods import build_method

    n = 500
    method = build_method("superloss", _cfg("--method", "superloss").options, num_classes=10, num_samples=n)
    library = SuperLoss(num_samples=n)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # a few steps, so the running threshold and the smoothing matter
        index = torch.randperm(n, generator=gen)[:64]
        logits = torch.randn(64, 10, generator=gen) * 3
        target = torch.randint(0, 10, (64,), generator=gen)
        grads = []
        for run in (lambda z: method(z, target, index),
                    lambda z: library(torch.nn.functional.cross_entropy(z, target, reduction="none"), index)):
            z = logits.clone().requires_grad_()
            run(z).backward()
            grads.append(z.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)
    assert float(method.criterion.tau) == float(library.tau)


def test_every_option_default_is_the_configurations():
    """Each option's default is the field's of `TrainConfig` or `MethodOptions`, and a method option's is
    the library's own (read from its signature): `curriculoss train` with no option is `TrainConfig()`,
    its learning rate aside (the model's)."""
    from dataclasses import fields, replace

    from curriculoss import IMAE, DataParameters, SuperLoss
    from curriculoss.harness.config import TrainConfig
    from curriculoss.harness.methods import MethodOptions

    cfg = _cfg()
    assert cfg == replace(TrainConfig(), lr=DEFAULT_LR[TrainConfig().model])
    args = vars(build_parser().parse_args(["train"]))
    for f in fields(MethodOptions):
        if f.name not in ("smoothing", "sl_normalise"):
            assert args[f.name] == f.default, f.name
    library = {"tau": (SuperLoss, "tau"), "lam": (SuperLoss, "lam"), "smoothing": (SuperLoss, "smoothing"),
               "imae_T": (IMAE, "T"), "dp_level": (DataParameters, "level"),
               "dp_class_lr": (DataParameters.optimizer, "class_lr"),
               "dp_instance_lr": (DataParameters.optimizer, "instance_lr"),
               "dp_class_weight_decay": (DataParameters.optimizer, "class_weight_decay"),
               "dp_instance_weight_decay": (DataParameters.optimizer, "instance_weight_decay"),
               "dp_weight_decay_mode": (DataParameters.optimizer, "weight_decay_mode")}
    for name, (fn, parameter) in library.items():
        assert getattr(MethodOptions(), name) == _default(fn, parameter), name
    assert MethodOptions().sl_normalise == (_default(SuperLoss, "step") == "normalised")
    bench = build_parser().parse_args(["bench"])
    assert build_config(bench) == replace(cfg, method="ce", noise_rate=0.0, seed=0)
