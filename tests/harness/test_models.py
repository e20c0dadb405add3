"""curriculoss.harness.models: the networks, their initialisation, and user model factories."""
from __future__ import annotations

import functools
import math
import os
import shutil
import sys

import pytest
import torch
from scipy import stats

from curriculoss.harness.cli import main
from curriculoss.harness.models import LeNet5, WideResNet, build_model
from curriculoss.harness.train import load_checkpoint

from _helpers import PAYLOAD, TINY64, one_line_error as _error


NETS = '''
import torch
import torch.nn as nn


def good(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def three(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def twelve(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12))


def wide_input(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))


class Pair(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(64, n)

    def forward(self, x):
        return self.fc(x.flatten(1)), x


class Number(nn.Module):
    def forward(self, x):
        return 3


def pair(num_classes):
    return Pair(num_classes)


def number(num_classes):
    return Number()


def raises(num_classes):
    raise RuntimeError("needs a GPU\\nand a second line")


def not_a_module(num_classes):
    return 42


not_callable = 3
'''


BAD_MODELS = {
    "three": ("its output has shape (2, 3)", "expected one floating tensor of shape (2, 10)"),
    "twelve": ("its output has shape (2, 12)", "(2, 10): 10 outputs, one per class"),
    "wide_input": ("its forward pass on a batch of shape (2, 1, 8, 8) failed (RuntimeError: mat1 and mat2", ""),
    "pair": ("its forward pass returned tuple", "expected one floating tensor"),
    "number": ("its forward pass returned int", ""),
    "raises": ("the factory raised RuntimeError: needs a GPU", ""),
    "not_callable": ("'not_callable' is not callable", ""),
}


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A package of model factories on the Python path (and a broken module or two), removed afterwards."""
    (tmp_path / "nets_bi.py").write_text(NETS)
    (tmp_path / "syntax_bi.py").write_text("def f(:\n")
    (tmp_path / "boom_bi.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("nets_bi", "syntax_bi", "boom_bi"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("factory", list(BAD_MODELS))
def test_a_bad_model_factory_is_refused_in_one_line(tmp_path, capsys, nets, factory):
    out = tmp_path / "run"
    err = _error(capsys, ["train", *TINY64, "--model", f"nets_bi:{factory}", "--out", str(out)])
    first, second = BAD_MODELS[factory]
    assert err.startswith(f"curriculoss: error: --model nets_bi:{factory}: {first}") and second in err, err
    assert not out.exists()


@pytest.mark.parametrize("model,needle", [
    ("syntax_bi:f", "cannot import 'syntax_bi': SyntaxError in "),
    ("boom_bi:f", "importing 'boom_bi' raised RuntimeError: boom at import"),
    ("os:system", "'system' cannot be called as system(num_classes=N)"),
    ("shutil:rmtree", "'rmtree' cannot be called as rmtree(num_classes=N)"),
])
def test_a_module_that_is_not_a_model_factory_is_refused(tmp_path, capsys, nets, monkeypatch, model, needle):
    calls = []
    for module, name in ((os, "system"), (shutil, "rmtree")):  # spies of the same signature
        spy = functools.wraps(getattr(module, name))(lambda *a, **k: calls.append(a))
        monkeypatch.setattr(module, name, spy)
    err = _error(capsys, ["train", *TINY64, "--model", model, "--out", str(tmp_path / "run")])
    assert err.startswith(f"curriculoss: error: --model {model}: {needle}"), err
    assert not calls and not (tmp_path / "run").exists()


def test_bench_probes_the_model_before_writing_its_grid(tmp_path, capsys, nets):
    out = tmp_path / "grid"
    err = _error(capsys, ["bench", *TINY64, "--methods", "ce", "--noise-rates", "0", "--seeds", "0",
                          "--model", "nets_bi:twelve", "--out", str(out)])
    assert "its output has shape (2, 12)" in err and not (out / "grid.json").exists()


def test_the_probe_leaves_the_run_as_it_was(tmp_path, nets, monkeypatch):
    """A factory's model is probed, and trains exactly as without the probe: the built-in MLP's run, bit for bit."""
    from curriculoss.harness import train

    probed = []
    real = train.probe_model
    monkeypatch.setattr(train, "probe_model", lambda model, name, x, k: probed.append(name) or real(model, name, x, k))
    (tmp_path / "same_bi.py").write_text("from curriculoss.harness.models import MLP\n\n\n"
                                         "def mlp(num_classes):\n    return MLP(64, num_classes)\n")
    try:
        assert main(["train", *TINY64, "--model", "same_bi:mlp", "--lr", "0.03", "--out", str(tmp_path / "a")]) == 0
    finally:
        sys.modules.pop("same_bi", None)
    assert main(["train", *TINY64, "--out", str(tmp_path / "b")]) == 0
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["model"] for d in "ab")
    assert probed == ["same_bi:mlp"] and all(torch.equal(a[k], b[k]) for k in a)


def test_build_model_never_searches_the_working_directory(tmp_path, monkeypatch, clean_imports):
    from curriculoss.harness.models import build_model

    marker = tmp_path / "MARKER"
    (tmp_path / "pwn_mod.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    path = [p for p in sys.path if p not in ("", ".", str(tmp_path))]
    monkeypatch.setattr(sys, "path", path)
    with pytest.raises(ValueError, match="cannot import 'pwn_mod'"):
        build_model("pwn_mod:f", (64,), 10)
    with pytest.raises(ValueError, match="user code"):
        build_model("pwn_mod:f", (64,), 10, allow_import=False)
    assert sys.path == path and not marker.exists()


@pytest.mark.parametrize("name, millions", [("wrn16-4", 2.7), ("wrn28-10", 36.5)])
def test_wide_resnet_parameter_counts_match_the_paper(name, millions):
    # Zagoruyko & Komodakis (2016), Table 4 / Sec. 3: WRN-16-4 2.7M, WRN-28-10 36.5M parameters.
    model = build_model(name, (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)


def test_wide_resnet_forward_and_errors():
    assert WideResNet(10, 1, 3, 7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(12, 1)
    with pytest.raises(ValueError, match="image inputs"):
        build_model("wrn16-4", (64,), 10)


def test_model_factory_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    assert main(["train", "--model", "mypkg.nets:good", "--limit", "64", "--epochs", "1", "--quiet",
                 "--method", "superloss", "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["model"]["1.weight"].shape == (10, 64)  # the factory's network, 10 digit classes
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_model("mypkg.nets:not_a_module", (64,), 10)
    with pytest.raises(ValueError, match="no attribute"):
        build_model("mypkg.nets:missing", (64,), 10)
    with pytest.raises(ValueError, match="cannot import"):
        build_model("nosuchpkg_xyz.nets:good", (64,), 10)
    with pytest.raises(SystemExit):
        main(["train", "--model", "not a model", "--quiet"])


def _layers(model):
    return [model.conv1, model.conv2, model.fc1, model.fc2, model.fc3]


@pytest.mark.parametrize("size", [28, 8])
def test_lenet_default_is_he_normal_with_a_zero_output_layer(size):
    """Each weight tensor followed by a ReLU is a sample of N(0, 2 / fan_in): its variance within a
    chi-square 99.9 % interval, its distribution not rejected by a Kolmogorov-Smirnov test against that
    normal. The output layer and every bias are zero."""
    torch.manual_seed(0)
    model = build_model("lenet", (1, size, size), 10)
    for layer in _layers(model)[:-1]:
        w = layer.weight.detach().double().flatten().numpy()
        fan_in = layer.weight[0].numel()
        var = 2.0 / fan_in
        n = w.size
        low, high = stats.chi2.ppf([0.0005, 0.9995], n) / n * var
        assert low <= (w ** 2).mean() <= high, (layer, (w ** 2).mean(), var)
        assert stats.kstest(w, "norm", args=(0.0, math.sqrt(var))).pvalue > 1e-3
    for layer in _layers(model):
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(model.fc3.weight) == 0


def test_lenet_starts_at_uniform_probabilities_and_every_layer_learns_from_the_second_step():
    """With the output layer at zero every sample starts at p = 1/C; the first SGD step moves the output
    layer only (the others' gradient passes through its zero weights), the second moves every layer."""
    torch.manual_seed(0)
    model = build_model("lenet", (1, 8, 8), 10)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    assert torch.equal(model(x).softmax(1), torch.full((32, 10), 0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    moved = []
    for _ in range(2):
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        moved.append([not torch.equal(b, p) for b, p in zip(before, model.parameters())])
    names = [n for n, _ in model.named_parameters()]
    assert [n for n, m in zip(names, moved[0]) if m] == ["fc3.weight", "fc3.bias"]
    assert all(moved[1]), dict(zip(names, moved[1]))


def test_lenet_torchinit_is_pytorchs_default_layer_initialisation():
    """``lenet-torchinit`` draws exactly what nn.Conv2d / nn.Linear draw on their own (same seed, same
    order): uniform weights and biases within 1 / sqrt(fan_in)."""
    torch.manual_seed(7)
    reference = [torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.Conv2d(6, 16, 5), torch.nn.Linear(400, 120),
                 torch.nn.Linear(120, 84), torch.nn.Linear(84, 10)]
    torch.manual_seed(7)
    model = build_model("lenet-torchinit", (1, 28, 28), 10)
    for ref, layer in zip(reference, _layers(model)):
        assert torch.equal(ref.weight, layer.weight) and torch.equal(ref.bias, layer.bias)
        bound = 1 / math.sqrt(layer.weight[0].numel())
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


def test_lenet_init_argument_is_checked():
    with pytest.raises(ValueError, match="init must be 'he' or 'torch'"):
        LeNet5(init="xavier")
