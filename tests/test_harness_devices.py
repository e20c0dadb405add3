"""The harness on devices and on the papers' data: crop-flip, WideResNets, model factories, cifar10 /
cifar100 / imagefolder readers, schedules, mixed precision, CPU-only checkpoints, exact resume.

The device tests use the suite's ``--device`` option: on CPU in CI, on a GPU with ``--device cuda``.
"""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness import augment, data as datasets, train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.models import WideResNet, build_model
from curriculoss.harness.train import TrainConfig, load_checkpoint, resolve_device, train
from curriculoss.signals import open_signals


# ------------------------------------------------------------------------------------------------ data

def write_cifar10_python(folder: Path, per_batch: int = 8, seed: int = 0) -> None:
    """CIFAR-10's python version: data_batch_1..5 and test_batch pickles of random images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
               b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))


def write_png_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 20, seed: int = 0):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v)


# ------------------------------------------------------------------------------------------- crop-flip

def test_crop_flip_matches_numpy_pad_crop_flip(device):
    x = torch.randn(16, 3, 8, 8, device=device)
    fill = torch.tensor([-1.0, 0.5, 2.0], device=device)
    out = augment.crop_flip(x, torch.Generator(device=device).manual_seed(3), fill=fill)
    # The same draws, in the documented order, then each image by hand with numpy.
    g = torch.Generator(device=device).manual_seed(3)
    oy = torch.randint(0, 9, (16,), generator=g, device=device).cpu().numpy()
    ox = torch.randint(0, 9, (16,), generator=g, device=device).cpu().numpy()
    flip = (torch.rand(16, generator=g, device=device) < 0.5).cpu().numpy()
    xs, fs = x.cpu().numpy(), fill.cpu().numpy()
    for i in range(16):
        padded = np.stack([np.pad(xs[i, c], 4, constant_values=fs[c]) for c in range(3)])
        crop = padded[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        if flip[i]:
            crop = crop[:, :, ::-1]
        np.testing.assert_array_equal(out[i].cpu().numpy(), crop)
    assert 0 < flip.sum() < 16 and len(set(oy)) > 1  # the draws vary


def test_crop_flip_is_seeded():
    x = torch.randn(4, 3, 32, 32)
    a = augment.crop_flip(x, torch.Generator().manual_seed(7))
    b = augment.crop_flip(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == x.shape
    with pytest.raises(ValueError, match="augment must be one of"):
        augment.augment("cutout", x)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment.crop_flip(torch.randn(4, 10))


# ---------------------------------------------------------------------------------------------- models

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


FACTORY = '''
import torch.nn as nn

def make_net(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

def not_a_module(num_classes):
    return 42
'''


def test_model_factory_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    assert main(["train", "--model", "mypkg.nets:make_net", "--limit", "64", "--epochs", "1", "--quiet",
                 "--method", "superloss", "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["model"]["1.weight"].shape == (10, 64)  # the factory's network, 10 digit classes
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_model("mypkg.nets:not_a_module", (64,), 10)
    with pytest.raises(ValueError, match="no attribute"):
        build_model("mypkg.nets:missing", (64,), 10)
    with pytest.raises(ValueError, match="cannot import"):
        build_model("nosuchpkg_xyz.nets:make_net", (64,), 10)
    with pytest.raises(SystemExit):
        main(["train", "--model", "not a model", "--quiet"])


# ----------------------------------------------------------------------------------------------- readers

def test_cifar100_python(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 12), ("test", 4)):
        obj = {b"fine_labels": [int(v) for v in rng.integers(0, 100, n)], b"coarse_labels": [0] * n,
               b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))
    d = datasets.load("cifar100", data_dir=tmp_path)
    assert d.num_classes == 100 and d.x_train.shape == (12, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    mean, std = d.normalisation
    raw = np.frombuffer(pickle.loads((folder / "train").read_bytes())[b"data"].tobytes(), np.uint8)
    raw = raw.reshape(12, 3, 1024).astype(np.float64) / 255
    np.testing.assert_allclose(mean, raw.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, raw.std(axis=(0, 2)), rtol=1e-5)


def test_imagefolder_split_and_given_split(tmp_path):
    write_png_folder(tmp_path / "flat", classes=("a", "b", "c"), per_class=5)
    d = datasets.load("imagefolder", data_dir=tmp_path / "flat", image_size=16)
    assert d.num_classes == 3 and len(d.y_train) + len(d.y_test) == 15 and d.input_shape == (3, 16, 16)
    write_png_folder(tmp_path / "s" / "train", per_class=4)
    write_png_folder(tmp_path / "s" / "test", per_class=2, seed=1)
    (tmp_path / "s" / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    d = datasets.load("imagefolder", data_dir=tmp_path / "s", image_size=20)
    assert (len(d.y_train), len(d.y_test)) == (8, 4) and sorted(set(d.y_test)) == [0, 1]
    # The pixels, resized to their own size: the PNG's bytes, standardised.
    from PIL import Image
    raw = np.asarray(Image.open(tmp_path / "s" / "train" / "cat" / "0.png"), np.float32) / 255
    mean, std = d.normalisation
    np.testing.assert_allclose(d.x_train[0] * std[:, None, None] + mean[:, None, None], raw.transpose(2, 0, 1), atol=1e-5)


def test_imagefolder_bad_images(tmp_path, capsys):
    write_png_folder(tmp_path, per_class=4)
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="truncated.png"):
        datasets.load("imagefolder", data_dir=tmp_path)
    d = datasets.load("imagefolder", data_dir=tmp_path, skip_bad_images=True)
    assert len(d.y_train) + len(d.y_test) == 8
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
    # Decoded by DataLoader workers: the same images, the same error naming the file.
    with pytest.raises(ValueError, match="truncated.png"):
        datasets.load("imagefolder", data_dir=tmp_path, workers=2)
    d2 = datasets.load("imagefolder", data_dir=tmp_path, skip_bad_images=True, workers=2)
    np.testing.assert_array_equal(d.x_train, d2.x_train)
    np.testing.assert_array_equal(d.y_test, d2.y_test)
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        datasets.load("imagefolder", data_dir=tmp_path / "cat")


# ------------------------------------------------------------------------------- the Done-when commands

def _assert_cpu_checkpoint(run: Path) -> dict:
    state = load_checkpoint(run / "checkpoint.pt")
    found = list(tensors_in(state))
    assert found and all(t.device.type == "cpu" for t in found)
    return state


def test_train_cifar10_wrn_crop_flip_superloss(tmp_path):
    write_cifar10_python(tmp_path / "D")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "D"), "--model", "wrn16-4",
                 "--augment", "crop-flip", "--method", "superloss", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["final"] <= 1.0
    assert json.loads((out / "args.json").read_text())["augment"] == "crop-flip"
    _assert_cpu_checkpoint(out)


def test_train_imagefolder_png(tmp_path):
    write_png_folder(tmp_path / "D" / "train", per_class=8)
    write_png_folder(tmp_path / "D" / "test", per_class=2, seed=1)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "D"), "--model", "wrn16-4",
                 "--augment", "crop-flip", "--method", "superloss", "--epochs", "1", "--batch-size", "8",
                 "--image-size", "32", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    _assert_cpu_checkpoint(out)


def test_augment_needs_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(40, 5)).astype(np.float32), y=rng.integers(0, 2, 40))
    cfg = TrainConfig(dataset="npz", data_dir=str(tmp_path / "f.npz"), epochs=1, augment="crop-flip")
    with pytest.raises(ValueError, match="needs image inputs"):
        train(cfg, progress=False)


# ---------------------------------------------------------------------------- devices and checkpoints

def _cifar_cfg(tmp_path: Path, device, **kw) -> TrainConfig:
    write_cifar10_python(tmp_path / "D", per_batch=6)
    base = dict(dataset="cifar10", data_dir=str(tmp_path / "D"), model="lenet", method="superloss",
                noise_rate=0.3, epochs=3, batch_size=8, device=str(device))
    return TrainConfig(**{**base, **kw})


def test_interrupted_run_with_crop_flip_resumes_exactly(tmp_path, device, monkeypatch):
    cfg = _cifar_cfg(tmp_path, device)
    train(cfg, tmp_path / "ref", progress=False)
    ref = open_signals(tmp_path / "ref")

    real = train_mod._write_metrics
    calls = []

    def crash_after_two(run_dir, history):
        real(run_dir, history)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after epoch 2's checkpoint: the run dies mid-way
    monkeypatch.setattr(train_mod, "_write_metrics", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_mod, "_write_metrics", real)
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    cut = open_signals(tmp_path / "cut")
    np.testing.assert_array_equal(ref["loss"], cut["loss"])
    np.testing.assert_array_equal(ref["confidence"], cut["confidence"])


def test_checkpoint_is_cpu_only_and_resumes_on_the_cpu(tmp_path, device):
    # Trained on the suite's device (a GPU with --device cuda), continued on the CPU.
    cfg = _cifar_cfg(tmp_path, device, method="data-params", epochs=2)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "run", progress=False)
    state = _assert_cpu_checkpoint(tmp_path / "run")
    assert state["epoch"] == 2
    # Same run, three epochs planned: a different configuration, refused...
    with pytest.raises(train_mod.CheckpointError, match="another configuration"):
        train(TrainConfig(**{**cfg.__dict__, "epochs": 3}), tmp_path / "run", resume=True, progress=False)
    # ...but another device is not another configuration.
    out = train(TrainConfig(**{**cfg.__dict__, "device": "cpu"}), tmp_path / "run", resume=True, progress=False)
    assert out["epochs"] == 2


def test_resolve_device(capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
        # The CLI reports it as an error naming the device, not a traceback.
        assert main(["train", "--device", "cuda", "--limit", "16", "--epochs", "1", "--quiet"]) != 0
        assert "device 'cuda': CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("amp, method", [("bf16", "superloss"), ("fp16", "data-params")])
def test_mixed_precision_keeps_the_loss_state_dtype(tmp_path, device, amp, method):
    if device.type == "cpu" and amp == "fp16":
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                torch.nn.Linear(2, 2)(torch.randn(1, 2))
        except RuntimeError:
            pytest.skip("this torch has no float16 autocast on the CPU")
    cfg = TrainConfig(limit=96, epochs=2, method=method, noise_rate=0.2, amp=amp, device=str(device), model="lenet")
    results = train(cfg, tmp_path / "run", progress=False)
    assert math.isfinite(results["final"])
    state = _assert_cpu_checkpoint(tmp_path / "run")
    if method == "superloss":
        assert state["method"]["criterion.smoothed_loss"].dtype == torch.float64
    else:
        assert "scaler" in state
        assert all(v.dtype == torch.float32 for k, v in state["method"].items() if "sigma" in k)
    assert np.isfinite(open_signals(tmp_path / "run")["loss"]).all()


def test_compile_wraps_the_model(tmp_path, monkeypatch):
    seen = []

    def fake_compile(model, *args, **kwargs):  # the wiring only; a real compile is minutes on 2 CPU cores
        seen.append(model)
        return model
    monkeypatch.setattr(torch, "compile", fake_compile)
    train(TrainConfig(limit=32, epochs=1, compile=True), tmp_path / "run", progress=False)
    assert len(seen) == 1 and isinstance(seen[0], torch.nn.Module)
    # compile is not part of what was trained: the run resumes without it.
    train(TrainConfig(limit=32, epochs=1), tmp_path / "run", resume=True, progress=False)


def test_compile_fuses_superloss(tmp_path, monkeypatch):
    """With --compile, SuperLoss runs its whole step through the fused path (SuperLoss(fused=True))."""
    import sys

    core = sys.modules["curriculoss.superloss"]
    calls, step = [], core.fused_step

    def fused_step(*args):
        calls.append(len(args[0]))
        return step(*args)
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)
    monkeypatch.setattr(core, "fused_step", fused_step)
    train(TrainConfig(limit=64, epochs=1, method="superloss", compile=True), tmp_path / "run", progress=False)
    assert sum(calls) == len(open_signals(tmp_path / "run")["labels"])  # every training sample, once
    calls.clear()
    train(TrainConfig(limit=64, epochs=1, method="superloss"), tmp_path / "plain", progress=False)
    assert calls == []


# ------------------------------------------------------------------------------------------- schedules

def _lrs(tmp_path, **kw) -> list[float]:
    out = tmp_path / "s"
    train(TrainConfig(limit=32, lr=0.1, **kw), out, progress=False)
    import csv
    with open(out / "metrics.csv") as fh:
        return [float(r["lr"]) for r in csv.DictReader(fh)]


def test_step_schedule_with_warmup(tmp_path):
    lrs = _lrs(tmp_path, epochs=6, schedule="step", milestones=[3, 5], gamma=0.2, warmup=2)
    # warmup 0.1 * 1/3, 0.1 * 2/3; then 0.1 until epoch 3, 0.02 until 5, 0.004
    np.testing.assert_allclose(lrs, [0.1 / 3, 0.2 / 3, 0.1, 0.02, 0.02, 0.004], rtol=1e-12)


def test_cosine_schedule_with_warmup(tmp_path):
    lrs = _lrs(tmp_path, epochs=5, schedule="cosine", warmup=1)
    expected = [0.05] + [0.05 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


@pytest.mark.parametrize("field, value, match", [
    ("schedule", "linear", "schedule must be"), ("warmup", 5, "warmup must be"), ("milestones", [3, 2], "milestones"),
    ("gamma", 0.0, "gamma"), ("amp", "fp8", "amp must be"), ("augment", "mixup", "augment must be"),
    ("model", "wrn", "model must be"),
])
def test_bad_settings_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        train_mod.check_config(TrainConfig(epochs=5, **{field: value}))


def test_superloss_method_in_float32_for_devices_without_float64(monkeypatch):
    """On MPS (no float64) the loop calls ``method.float()`` and sums in float32: the SuperLoss method's
    step then makes no float64 tensor (checked on the CPU, with the MPS accumulator dtype forced)."""
    from curriculoss.harness import methods

    monkeypatch.setattr(methods, "accumulator_dtype", lambda device: torch.float32)
    method = methods.build_method("superloss", methods.MethodOptions(), 10, 50).float()
    logits = torch.randn(16, 10, requires_grad=True)
    target, index = torch.randint(0, 10, (16,)), torch.randperm(50)[:16]
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    seen.append(str(func))
            return out

    with Spy():
        for _ in range(2):
            method(logits, target, index).backward()
    assert seen == []
    assert method.epoch_sums().dtype == torch.float32
