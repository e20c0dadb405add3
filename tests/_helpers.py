"""What several test files share: a refused command's one-line error, an example run to its flags, the
argument lists of tiny runs, the framework tests' data, model and plain-loop steps, writers of small data
sets and readers of run folders, and the losses' random cases, argument checks and references."""
import csv
import importlib.util
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import lambertw as scipy_lambertw

from curriculoss import DataParameters
from curriculoss.harness.cli import main
from curriculoss.harness.config import TrainConfig
from curriculoss.harness.checkpoint import load_checkpoint
from curriculoss.signals import open_signals

#: A tiny `curriculoss train` (300 digits, 3 epochs).
TINY = ["--dataset", "digits", "--limit", "300", "--epochs", "3", "--batch-size", "32", "--quiet"]
#: A tinier one (64 digits, 2 epochs), the finished run of `tests/harness/conftest.py`.
TINY64 = ["--limit", "64", "--epochs", "2", "--batch-size", "32", "--quiet"]
#: One thread per process: the tests that spawn processes run on 2 shared cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

#: Every floating dtype a loss accepts, the half-precision ones first.
ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

#: A model factory module that a run folder could carry: importing it writes `marker`.
PAYLOAD = '''
import pathlib
pathlib.Path({marker!r}).write_text("the run folder's code ran")
import torch.nn as nn


def f(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `curriculoss ARGV`, assert it was refused with one `curriculoss: error:` line, return it."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code, text = exc.code, str(exc.code) if isinstance(exc.code, str) else ""
    else:
        text = ""
    assert code not in (0, None)
    text = text or capsys.readouterr().err
    assert text.startswith("curriculoss: error: ") and text.strip().count("\n") == 0, text
    return text


def load_example(script: Path):
    """An example script imported as a module named after its file."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def run_example(script: Path, argv: list[str]) -> dict:
    """Import an example script and call its `main(argv)`; assert it wrote nothing outside its `--out`."""
    example = load_example(script)
    before = set(Path.cwd().iterdir())
    figures = example.main(argv)
    assert set(Path.cwd().iterdir()) == before  # nothing written outside --out
    return figures


def assert_example_flags_the_noisy_digits(script: Path, method: str, out: Path) -> None:
    """A 6-epoch run of a framework's example writes the signals and `flag.json`, and its flag finds the
    noisy digits (AUROC above 0.9)."""
    figures = run_example(script, ["--method", method, "--epochs", "6", "--out", str(out)])
    assert (out / "signals.npz").exists() and (out / "flag.json").exists()
    assert figures["auroc"] > 0.9


# ------------------------------------------------------------------------------------------- plain loops

def framework_samples(num_samples: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The framework tests' training set: 8 normal features per sample and random labels (seed 0)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(num_samples, 8, generator=g), torch.randint(0, num_classes, (num_samples,), generator=g)


def framework_model_parts(num_classes: int, num_samples: int, level: str):
    """The framework tests' model: a linear-tanh-linear net on those 8 features, and its data parameters."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, num_classes))
    return net, DataParameters(num_classes, num_samples, level=level)


class FrameworkNet(torch.nn.Module):
    """`framework_model_parts` as one module, whose forward returns `{"logits": ...}` as the Hugging Face
    Trainer wants."""

    def __init__(self, num_classes: int, num_samples: int, level: str = "instance"):
        super().__init__()
        self.net, self.dp = framework_model_parts(num_classes, num_samples, level)

    def forward(self, x):
        return {"logits": self.net(x)}


#: The data parameters' optimiser settings that the framework tests train with.
DP_OPTIMIZER = dict(instance_lr=0.5, class_lr=0.2, class_weight_decay=1e-3)


def endless(loader):
    """The batches of `loader()`, epoch after epoch, each epoch from a fresh `loader()`."""
    while True:
        yield from loader()


def accumulate_gradients(batches, accumulate: int, loss_of) -> None:
    """Backpropagate `loss_of(batch) / accumulate` for each of the next `accumulate` batches."""
    for _ in range(accumulate):
        (loss_of(next(batches)) / accumulate).backward()


def step_and_zero(*optimizers) -> None:
    for optimizer in optimizers:
        optimizer.step()
    for optimizer in optimizers:
        optimizer.zero_grad()


def assert_trained_alike(model, net, dp) -> None:
    """The network `model.net` and the data parameters `model.dp` that a framework trained are those that a
    plain loop trained, `net` and `dp`, from the same start, to 1e-6; the data parameters did move."""
    assert not torch.equal(dp.log_instance_sigma, torch.zeros_like(dp.log_instance_sigma))
    for ours, reference in [*zip(model.dp.data_parameters(), dp.data_parameters()),
                            *zip(model.net.parameters(), net.parameters())]:
        torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------- run folders

def signals_of(run: Path) -> dict:
    return {key: np.asarray(value) for key, value in open_signals(run).items()}


def without(arrays: dict, key: str) -> dict:
    return {k: v for k, v in arrays.items() if k != key}


def copy_run(run: Path, tmp_path: Path, *, npz: bool = False) -> Path:
    """A copy of the run; `npz=True`: with its signals in one `signals.npz`, as older versions wrote them."""
    out = Path(shutil.copytree(run, tmp_path / "run"))
    if npz:
        signals = signals_of(out)
        shutil.rmtree(out / "signals")
        np.savez(out / "signals.npz", **signals)
    return out


def copy_named(finished, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished / name, tmp_path / name))


def stamps(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def grid_argv(out: Path, *extra: str) -> list[str]:
    return ["bench", *TINY64, "--epochs", "1", "--methods", "ce", "--noise-rates", "0.2", "--seeds", "0", *extra,
            "--out", str(out)]


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.pop("seconds")
    return rows


def train_stopped_after_epoch_two(cfg: TrainConfig, out: Path, monkeypatch) -> None:
    """`train(cfg, out)` interrupted (KeyboardInterrupt) once epoch 2's checkpoint and metrics are written."""
    from curriculoss.harness import train as train_mod

    write = train_mod._write_metrics

    def stop_after_two(run_dir, history):
        write(run_dir, history)
        if len(history) == 2:
            raise KeyboardInterrupt
    with monkeypatch.context() as patched:
        patched.setattr(train_mod, "_write_metrics", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train(cfg, out, progress=False)


def spawn_train(out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "curriculoss", "train", "--dataset", "digits", "--limit", "800", "--epochs", "6",
            "--batch-size", "8", "--method", "data-params", "--noise-rate", "0.4", "--quiet", "--out", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v)


def assert_cpu_checkpoint(run: Path) -> dict:
    state = load_checkpoint(run / "checkpoint.pt")
    found = list(tensors_in(state))
    assert found and all(t.device.type == "cpu" for t in found)
    return state


def same_run_outputs(a, b, exact=True):
    """Identical signals, weights, method state and metrics (on a GPU, whose kernels may sum in any
    order from run to run, to float32 rounding)."""
    same = (lambda x, y, msg: np.testing.assert_array_equal(x, y, err_msg=msg)) if exact else \
        (lambda x, y, msg: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=msg))
    sa, sb = open_signals(a), open_signals(b)
    for key in sa:
        same(sa[key], sb[key], key)
    ma, mb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for part in ("model", "method"):
        for name, tensor in ma[part].items():
            if torch.is_tensor(tensor):
                same(tensor.numpy(), mb[part][name].numpy(), name)
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
    if exact:
        np.testing.assert_equal(drop(ma["history"]), drop(mb["history"]))  # NaN columns count as equal


def image_run_config(root, device="cpu", **kw):
    """A tiny SuperLoss run on the image folder `root` (see `write_pngs`)."""
    base = dict(dataset="imagefolder", data_dir=str(root), image_size=8, model="lenet", method="superloss",
                noise_rate=0.3, epochs=3, batch_size=5, augment="crop-flip", device=str(device))
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------------- data sets

def write_cifar10_python(folder: Path, per_batch: int = 8, seed: int = 0) -> None:
    """CIFAR-10's python version: data_batch_1..5 and test_batch pickles of random images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
               b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))


def write_pngs(root, classes=("a", "b", "c"), per_class=7, size=12, seed=0, ragged=True):
    """PNGs of random RGB pixels in ROOT/CLASS/I.png, `size` wide; `ragged`: image I is `size + I % 3` high
    (sizes differ from the image size: the resize is part of what must match), else square."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height = size + i % 3 if ragged else size
            Image.fromarray(rng.integers(0, 256, (height, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def write_png_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 20, seed: int = 0):
    """Square PNGs, two classes of six by default (see `write_pngs`)."""
    write_pngs(root, classes, per_class, size, seed, ragged=False)


def peak_bytes(fn):
    """Peak of Python-tracked allocations (bytes objects, numpy arrays) during fn(), and its exception."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned to the caller, which checks it
        error = exc
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


# ------------------------------------------------------------------------------------------ classification

def random_case(B: int = 20, C: int = 6, scale: float = 2.5, seed: int = 0, dtype=torch.float64):
    """B rows of C logits, normal times `scale` (drawn in float64, then cast), and their random targets."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(B, C, generator=gen, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, C, (B,), generator=gen)
    return z, y


def assert_input_errors(fn, more=lambda z, y: []) -> None:
    """`fn(logits, target)` refuses the wrong logits, targets and reductions with errors that name them,
    and the cases `more(z, y)` lists as well (error, name, logits, target); it takes int32 targets."""
    z = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    refused = [
        (ValueError, "logits", torch.randn(4), y),
        (ValueError, "logits", torch.randn(4, 3, 2), y),
        (TypeError, "logits", torch.randint(0, 3, (4, 3)), y),
        (ValueError, "target", z, torch.tensor([0, 1, 2])),
        (ValueError, "target", z, y.unsqueeze(1)),
        (TypeError, "target", z, y.float()),
        (TypeError, "target", z, y.bool()),
        (ValueError, "target", z, torch.tensor([0, 1, 3, 0])),
        (ValueError, "target", z, torch.tensor([0, -1, 2, 0])),
        (ValueError, "target", z, y.to("meta")),  # not on the device of the logits
        *more(z, y),
    ]
    for error, name, logits, target in refused:
        with pytest.raises(error, match=name):
            fn(logits, target)
    with pytest.raises(ValueError, match="reduction"):
        fn(z, y, reduction="avg")
    torch.testing.assert_close(fn(z, y.int()), fn(z, y))


class Float64Spy(torch.utils._python_dispatch.TorchDispatchMode):
    """Records in `seen` every operation whose output is a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.seen.append(str(func))
        return out


# ---------------------------------------------------------------------------------------------- references

def superloss_reference(loss: np.ndarray, tau: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 3-4 in numpy with scipy's Lambert W (an independent implementation)."""
    beta = np.maximum((loss - tau) / lam, -2 / math.e)
    # At the cap the argument is -1/e, where W = -1 exactly; scipy returns NaN for the double nearest
    # -1/e (it lies just below -1/e), so the cap's value is written out.
    w = np.where(beta <= -2 / math.e, -1.0, scipy_lambertw(np.maximum(beta / 2, -1 / math.e)).real)
    sigma = np.exp(-w)
    return (loss - tau) * sigma + lam * w**2, sigma
