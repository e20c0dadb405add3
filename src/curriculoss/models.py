"""Small networks used by the command line, the benchmarks and the reproductions.

- :class:`MLP`: a multi-layer perceptron on flattened inputs.
- :class:`LeNet5`: LeCun et al. (1998), as used for MNIST digit classification and, with one output,
  for the SuperLoss paper's digit regression (Sec. 3.2).
- :func:`resnet20`, :func:`resnet32`: the CIFAR ResNets of He et al. (2016, Sec. 4.2: 6n+2 layers,
  16/32/64 channels), the networks of the IMAE paper's CIFAR experiments.

:func:`build_model` picks one by name for an input shape and an output size.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["MLP", "LeNet5", "ResNetCifar", "resnet20", "resnet32", "build_model", "MODELS", "DEFAULT_LR"]

#: The command line's default SGD learning rate per model (momentum 0.9, batch 64, cosine schedule),
#: selected on validation splits by ``benchmarks/bench_defaults.py --select`` (README, "Defaults").
DEFAULT_LR = {"mlp": 0.03, "lenet": 0.03, "resnet20": 0.1, "resnet32": 0.1}


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened input."""

    def __init__(self, in_features: int, num_outputs: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5: two 5x5 convolutions with max pooling, then 120-84-``num_classes`` units.

    Images smaller than 28x28 (e.g. scikit-learn's 8x8 digits) are padded so that both
    convolutions keep a spatial extent; the first convolution uses padding 2 as in the usual
    MNIST variant, so 28x28 inputs give the classic 16x5x5 feature map.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=0 if image_size >= 16 else 2)
        size = image_size // 2
        size = size - 4 if image_size >= 16 else size
        size = size // 2
        self.fc1 = nn.Linear(16 * size * size, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet with ``6 n + 2`` layers (He et al. 2016, Sec. 4.2)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet20(in_channels: int = 3, num_classes: int = 10) -> ResNetCifar:
    return ResNetCifar(20, in_channels, num_classes)


def resnet32(in_channels: int = 3, num_classes: int = 10) -> ResNetCifar:
    return ResNetCifar(32, in_channels, num_classes)


def _image_dims(input_shape: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (channels, height, width), got input shape {input_shape}")
    return input_shape[0], input_shape[1]


MODELS = ("mlp", "lenet", "resnet20", "resnet32")


def build_model(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """A network by name (one of :data:`MODELS`) for inputs of ``input_shape`` (without the batch)."""
    if name == "mlp":
        return MLP(math.prod(input_shape), num_outputs)
    if name == "lenet":
        channels, size = _image_dims(input_shape, name)
        return LeNet5(channels, num_outputs, size)
    if name in ("resnet20", "resnet32"):
        channels, _ = _image_dims(input_shape, name)
        return ResNetCifar(int(name[6:]), channels, num_outputs)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
