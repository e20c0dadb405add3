"""Streamed imagefolder training: the files decoded per batch by a DataLoader must train exactly as the
decoded set held in memory (same seeded order, noise, per-sample indices, augmentation, test metric)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from curriculoss.harness import data as datasets, train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.data.imagefolder import ImageFiles, moment_stats
from curriculoss.harness.train import TrainConfig, load_checkpoint, train
from curriculoss.signals import open_signals

pytest.importorskip("PIL.Image")


def write_pngs(root, classes=("a", "b", "c"), per_class=7, size=12, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # sizes differ from the image size: the resize is part of what must match
            Image.fromarray(rng.integers(0, 256, (size + i % 3, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def _cfg(root, device="cpu", **kw):
    base = dict(dataset="imagefolder", data_dir=str(root), image_size=8, model="lenet", method="superloss",
                noise_rate=0.3, epochs=3, batch_size=5, augment="crop-flip", device=str(device))
    return TrainConfig(**{**base, **kw})


def _same_run_outputs(a, b, exact=True):
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


def test_moment_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 3, 5, 4), dtype=np.uint8)
    wide = images.reshape(9, 3, -1).astype(np.int64)
    moments = np.stack([wide.sum(2), (wide * wide).sum(2)], axis=1)
    mean, std = moment_stats(moments, 20)
    ref = images.astype(np.float64) / 255  # the exact pixel values, float64: an independent reference
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-7)
    # a constant channel: std 1, not 0
    assert moment_stats(np.array([[[0, 5, 0], [0, 25, 0]]]), 1)[1][0] == 1.0


@pytest.mark.parametrize("limit", [None, 11])
def test_streamed_samples_are_the_in_memory_rows(tmp_path, limit):
    write_pngs(tmp_path / "D")
    mem = datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, limit=limit)
    st = datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, limit=limit, stream=True)
    assert isinstance(st.x_train, ImageFiles) and isinstance(mem.x_train, np.ndarray)
    assert st.x_train.shape == mem.x_train.shape and st.input_shape == mem.input_shape == (3, 8, 8)
    np.testing.assert_array_equal(st.y_train, mem.y_train)
    np.testing.assert_array_equal(st.y_test, mem.y_test)
    for a, b in zip(st.normalisation, mem.normalisation):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(torch.stack([st.x_train[i] for i in range(len(st.x_train))]).numpy(), mem.x_train)
    np.testing.assert_array_equal(torch.stack([st.x_test[i] for i in range(len(st.x_test))]).numpy(), mem.x_test)
    # the statistics are those of the kept training images (after limit), to float32 precision
    raw = (mem.x_train * mem.normalisation[1][:, None, None] + mem.normalisation[0][:, None, None]).astype(np.float64)
    np.testing.assert_allclose(mem.normalisation[0], raw.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_auto_streams_only_what_does_not_fit(tmp_path):
    write_pngs(tmp_path / "D", per_class=3)
    decoded = 9 * 3 * 8 * 8 * 4
    load = lambda memory: datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, stream=None, memory=memory)
    assert isinstance(load(4 * decoded - 4).x_train, ImageFiles)
    assert isinstance(load(4 * decoded).x_train, np.ndarray)
    assert isinstance(load(None).x_train, np.ndarray)  # memory unknown: in memory, as before
    free = train_mod.available_memory(torch.device("cpu"))
    assert free is None or free > 0


def test_available_memory_is_shared_by_the_local_ranks(monkeypatch):
    one = train_mod.available_memory()
    if one is None:
        pytest.skip("no memory figure on this system")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    # other processes allocate meanwhile: a quarter, give or take a tenth of the machine's figure
    assert train_mod.available_memory() == pytest.approx(one / 4, rel=0.1)


def test_auto_mode_of_the_config(tmp_path, monkeypatch):
    write_pngs(tmp_path / "D", per_class=3)
    monkeypatch.setattr(train_mod, "available_memory", lambda device=None: 1000)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D"))
    assert isinstance(data.x_train, ImageFiles)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D"), stream=False)
    assert isinstance(data.x_train, np.ndarray)
    data, _ = train_mod.prepare_data(_cfg(tmp_path / "D", stream="no"))
    assert isinstance(data.x_train, np.ndarray)


@pytest.mark.parametrize("method, workers", [("superloss", 0), ("data-params", 1)])
def test_streamed_training_is_identical_to_in_memory(tmp_path, method, workers, device):
    # on the suite's device: with --device cuda the streamed batches come through pinned memory
    write_pngs(tmp_path / "D")
    train(_cfg(tmp_path / "D", device, method=method, stream="no"), tmp_path / "mem", progress=False)
    train(_cfg(tmp_path / "D", device, method=method, stream="yes", workers=workers), tmp_path / "st", progress=False)
    _same_run_outputs(tmp_path / "mem", tmp_path / "st", exact=device.type == "cpu")


def test_streamed_run_resumes_exactly(tmp_path, monkeypatch, device):
    write_pngs(tmp_path / "D")
    cfg = _cfg(tmp_path / "D", device, stream="yes")
    train(cfg, tmp_path / "ref", progress=False)
    real, calls = train_mod._write_metrics, []

    def crash_after_two(run_dir, history):
        real(run_dir, history)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after epoch 2's checkpoint
    monkeypatch.setattr(train_mod, "_write_metrics", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_mod, "_write_metrics", real)
    # resumed from the command line, streamed: the run's own configuration, exactly replayed
    assert main(["train", "--resume", str(tmp_path / "cut"), "--stream", "yes", "--quiet"]) == 0
    assert json.loads((tmp_path / "cut" / "args.json").read_text())["stream"] == "yes"
    _same_run_outputs(tmp_path / "ref", tmp_path / "cut", exact=device.type == "cpu")


def test_stream_flag_on_the_command_line(tmp_path):
    write_pngs(tmp_path / "D", per_class=4)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "D"), "--image-size", "8",
                 "--model", "lenet", "--stream", "yes", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "args.json").read_text())["stream"] == "yes"
    with pytest.raises(SystemExit):
        main(["train", "--stream", "sometimes"])


@pytest.mark.parametrize("value, match", [("sometimes", "stream must be"), ("yes", "is for dataset imagefolder")])
def test_bad_stream_settings_are_named(value, match):
    with pytest.raises(ValueError, match=match):
        train_mod.check_config(TrainConfig(dataset="digits", stream=value))


def test_the_loader_leaves_the_global_rng_alone():
    # A DataLoader draws its workers' base seed from the global generator unless given its own: the
    # streamed run would then draw different dropout masks (or anything else seeded globally).
    class Fake:
        shape = (4, 3, 2, 2)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3, 2, 2), float(i))

    for workers in (0, 1):
        loader = train_mod._stream_loader(Fake(), workers, torch.device("cpu"), [[2, 0], [], [1, 3]])
        before = torch.get_rng_state()
        batches = [b[:, 0, 0, 0].tolist() for b in loader]
        assert batches == [[2.0, 0.0], [], [1.0, 3.0]]  # the given batches, in order; an empty one too
        assert torch.equal(before, torch.get_rng_state())


def test_flag_predicts_a_streamed_set_as_the_in_memory_one(tmp_path, monkeypatch):
    """``curriculoss flag`` on a streamed run decodes the images per batch (no whole array in memory) and
    gets the predictions the in-memory arrays give."""
    from dataclasses import replace

    from curriculoss.harness import epoch, flagging

    write_pngs(tmp_path / "D", per_class=5)
    cfg = _cfg(tmp_path / "D", stream="yes", epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    streamed_batches = []
    real = epoch.stream_loader
    monkeypatch.setattr(epoch, "stream_loader", lambda *a, **k: streamed_batches.append(a[3]) or real(*a, **k))
    streamed = flagging._predictions(tmp_path / "run", cfg)
    assert streamed_batches, "the streamed run's predictions did not stream"
    in_memory = flagging._predictions(tmp_path / "run", replace(cfg, stream="no"))
    np.testing.assert_array_equal(streamed, in_memory)
    assert main(["flag", str(tmp_path / "run")]) == 0
