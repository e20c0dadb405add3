"""Small networks used by the command line, the benchmarks and the reproductions.

- `MLP`: a multi-layer perceptron on flattened inputs.
- `LeNet5`: LeCun et al. (1998), as used for MNIST digit classification and, with one output,
  for the SuperLoss paper's digit regression (Sec. 3.2).
- `resnet20`, `resnet32`: the CIFAR ResNets of He et al. (2016, Sec. 4.2: 6n+2 layers,
  16/32/64 channels), the networks of the IMAE paper's CIFAR experiments.
- `WideResNet` (`wrn28-10`, `wrn16-4`, any `wrnD-K`): Zagoruyko & Komodakis (2016), the
  WRN-28-10 of the SuperLoss and Data Parameters CIFAR experiments.

`build_model` picks one by name (the registry `MODEL_BUILDERS`: a new network is a builder and one
line there) for an input shape and an output size; a name `package.module:factory` imports a user's
callable `factory(num_classes=...)` instead.
"""
from __future__ import annotations

import importlib
import inspect
import math
import re

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["MLP", "LeNet5", "ResNetCifar", "resnet20", "resnet32", "WideResNet", "build_model", "MODELS", "MODEL_BUILDERS",
           "check_model_name", "is_factory", "probe_model", "DEFAULT_LR", "default_lr"]

#: The command line's default SGD learning rate per model (momentum 0.9, batch 64, cosine schedule),
#: selected on validation splits by `benchmarks/bench_defaults.py --select` (docs/defaults.md).
DEFAULT_LR = {"mlp": 0.03, "lenet": 0.01, "lenet-torchinit": 0.03, "resnet20": 0.1, "resnet32": 0.1}


def default_lr(name: str) -> float:
    """The default learning rate of model `name`: `DEFAULT_LR`, else 0.1 (the papers' rate for
    the WideResNets on CIFAR, and a user's own `package.module:factory`)."""
    return DEFAULT_LR.get(name, 0.1)


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
    """LeNet-5: two 5x5 convolutions with max pooling, then 120-84-`num_classes` units.

    Images smaller than 28x28 (e.g. scikit-learn's 8x8 digits) are padded so that both
    convolutions keep a spatial extent; the first convolution uses padding 2 as in the usual
    MNIST variant, so 28x28 inputs give the classic 16x5x5 feature map.

    `init='he'` (default): the weights of every layer followed by a ReLU drawn from N(0, 2 / fan_in)
    (He et al. 2015, the variance that keeps a ReLU network's signal from shrinking layer by layer), the
    output layer's weights zero, and zero biases. He's factor 2 is for a layer followed by a ReLU: given to
    the output layer it spread the initial logits (standard deviation 0.8-2.1 on the 8x8 digits), so that
    up to 30 % of the samples started with p_y < 0.01; a loss whose gradient scales with p_y (MAE) then
    never learned those classes. With a zero output layer every sample starts at p = 1/C, and the
    output layer's first step starts the gradient flowing to the others (docs/defaults.md).
    `init='torch'`: PyTorch's default layer initialisation (uniform, variance 1 / (3 fan_in), biases
    too), under which the signal shrinks about six-fold in variance per ReLU layer: on the 8x8 digits the
    network's output started nearly constant and the losses with a weak gradient there (MAE, GCE) never
    left chance in 30 epochs. The command line's `lenet-torchinit` is that variant, kept for the MNIST
    reproductions recorded with it.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, init: str = "he"):
        super().__init__()
        if init not in ("he", "torch"):
            raise ValueError(f"init must be 'he' or 'torch', got {init!r}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=0 if image_size >= 16 else 2)
        size = image_size // 2
        size = size - 4 if image_size >= 16 else size
        size = size // 2
        self.fc1 = nn.Linear(16 * size * size, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        if init == "he":
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2, self.fc3):
                nn.init.zeros_(layer.bias)
            nn.init.zeros_(self.fc3.weight)

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
    """CIFAR ResNet with `6 n + 2` layers (He et al. 2016, Sec. 4.2)."""

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


class _WideBlock(nn.Module):
    """Pre-activation basic block of a wide ResNet: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut
    (a 1x1 convolution of the pre-activated input when the shape changes; Zagoruyko & Komodakis, Sec. 2)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(out)
        # The projection takes the pre-activated input, as in the authors' network.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-`depth`-`width` (Zagoruyko & Komodakis 2016): `(depth - 4) / 6` pre-activation blocks in
    each of three groups of `16 k`, `32 k`, `64 k` channels (k = `width`), strides 1, 2, 2, then
    BN-ReLU, global average pooling and a linear layer. WRN-28-10 (36.5M parameters) is the network of
    the SuperLoss (Sec. 3.3) and Data Parameters (Sec. 4.2) CIFAR experiments."""

    def __init__(self, depth: int = 28, width: int = 10, in_channels: int = 3, num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if width < 1:
            raise ValueError(f"width must be a positive int, got {width}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for i in range(n):
                blocks.append(_WideBlock(cin, cout, stride if i == 0 else 1, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _image_dims(input_shape: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (channels, height, width), got input shape {input_shape}")
    return input_shape[0], input_shape[1]


#: The built-in names; besides these, `wrnD-K` for any WideResNet depth D = 6n+4 and width K, and
#: `package.module:factory` for a user's network.
def _mlp(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return MLP(math.prod(input_shape), num_outputs)


def _lenet(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    channels, size = _image_dims(input_shape, name)
    return LeNet5(channels, num_outputs, size, init="he" if name == "lenet" else "torch")


def _resnet(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    channels, _ = _image_dims(input_shape, name)
    return ResNetCifar(int(name[6:]), channels, num_outputs)


def _wide_resnet(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    channels, _ = _image_dims(input_shape, name)
    depth, width = _WRN.fullmatch(name).groups()
    return WideResNet(int(depth), int(width), channels, num_outputs)


#: name -> builder(name, input shape without the batch, number of outputs); any `wrnDEPTH-WIDTH` builds too.
MODEL_BUILDERS = {"mlp": _mlp, "lenet": _lenet, "lenet-torchinit": _lenet, "resnet20": _resnet, "resnet32": _resnet,
                  "wrn16-4": _wide_resnet, "wrn28-10": _wide_resnet}
MODELS = tuple(MODEL_BUILDERS)

_WRN = re.compile(r"wrn(\d+)-(\d+)")


def check_model_name(name: str) -> str:
    """`name` if `build_model` can resolve it by its form (a factory is imported only when built)."""
    if not isinstance(name, str):
        raise ValueError(f"model must be a string, got {name!r}")
    if name in MODELS or _WRN.fullmatch(name) or _factory_parts(name) is not None:
        return name
    raise ValueError(f"model must be one of {', '.join(MODELS)}, wrnDEPTH-WIDTH, or package.module:factory; got {name!r}")


def _factory_parts(name: str) -> tuple[str, str] | None:
    module, sep, attr = name.partition(":")
    ident = re.compile(r"[A-Za-z_]\w*")
    if not sep or not all(ident.fullmatch(p) for p in module.split(".")) or not all(
            ident.fullmatch(p) for p in attr.split(".")):
        return None
    return module, attr


def is_factory(name: str) -> bool:
    """Whether `name` is a user's `package.module:factory`, which building imports (runs) that code."""
    return isinstance(name, str) and name not in MODELS and not _WRN.fullmatch(name) and _factory_parts(name) is not None


def _import_factory(name: str):
    """The user's callable, imported from the interpreter's own `sys.path`: neither the working
    directory nor any run folder is added to it, so a folder's files are never imported by accident."""
    module_name, attr = _factory_parts(name)
    module = _import_module(name, module_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--model {name}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--model {name}: {attr!r} is not callable")
    _check_factory_signature(name, attr, obj)
    return obj


def _import_module(name: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"--model {name}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH? "
                         "(the working directory is not searched: PYTHONPATH=. adds it)") from None
    except SyntaxError as exc:
        raise ValueError(f"--model {name}: cannot import {module_name!r}: SyntaxError in {exc.filename}, "
                         f"line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # whatever the module's own code raises while it is imported
        raise ValueError(f"--model {name}: importing {module_name!r} raised {one_line(exc)}") from None


def _check_factory_signature(name: str, attr: str, obj) -> None:
    """A factory is called as `factory(num_classes=N)`: a callable that cannot take that (`os:system`)
    is refused before it is called."""
    try:
        inspect.signature(obj).bind(num_classes=1)
    except (TypeError, ValueError):
        raise ValueError(f"--model {name}: {attr!r} cannot be called as {attr}(num_classes=N); a model factory "
                         "takes num_classes and returns a torch.nn.Module") from None


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters: an error message's part that fits one line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def probe_model(model: nn.Module, name: str, x: torch.Tensor, num_outputs: int) -> None:
    """One forward pass of a user's model on `x` (a batch of training inputs, on the model's device), in
    eval mode, without gradients, and with the random state restored after it, so that the run trains as
    without it. The output must be one floating tensor of shape `(len(x), num_outputs)`."""
    was_training = model.training
    model.eval()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            out = model(x)
    except Exception as exc:  # the user's forward: any error is the model's
        raise ValueError(f"--model {name}: its forward pass on a batch of shape {tuple(x.shape)} failed "
                         f"({one_line(exc)}); the model must take the data set's inputs") from None
    finally:
        model.train(was_training)
    _check_output(name, out, len(x), num_outputs)


def _check_output(name: str, out, batch: int, num_outputs: int) -> None:
    wanted = f"one floating tensor of shape ({batch}, {num_outputs}): {num_outputs} " + \
             ("output (regression)" if num_outputs == 1 else "outputs, one per class")
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"--model {name}: its forward pass returned {type(out).__name__}; expected {wanted}")
    if tuple(out.shape) != (batch, num_outputs) or not out.is_floating_point():
        raise ValueError(f"--model {name}: its output has shape {tuple(out.shape)} and dtype "
                         f"{str(out.dtype).replace('torch.', '')} for a batch of {batch}; expected {wanted}")


def build_model(name: str, input_shape: tuple[int, ...], num_outputs: int, *, allow_import: bool = True) -> nn.Module:
    """A network by name for inputs of `input_shape` (without the batch).

    `name` is one of `MODELS`, `wrnDEPTH-WIDTH`, or `package.module:factory`: the factory is
    called as `factory(num_classes=num_outputs)` and must return an `nn.Module` (for example
    `timm.create_model` wrapped in a function, when timm is installed). `allow_import=False` refuses
    a factory instead of importing it (a name read from a run folder, which must never run code).
    """
    check_model_name(name)
    if name in MODEL_BUILDERS:
        return MODEL_BUILDERS[name](name, input_shape, num_outputs)
    if _WRN.fullmatch(name):
        return _wide_resnet(name, input_shape, num_outputs)
    if not allow_import:
        raise ValueError(f"model {name!r} is user code, which is imported only when named on the command line")
    factory = _import_factory(name)
    try:
        model = factory(num_classes=num_outputs)
    except Exception as exc:  # the user's code: any error is the factory's
        raise ValueError(f"--model {name}: the factory raised {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {name}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model
