"""LeNet-5's initialisation: He et al. (2015) with a zero output layer by default, PyTorch's default layer initialisation on request."""
import math

import pytest
import torch
from scipy import stats

from curriculoss.harness.models import LeNet5, build_model


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
