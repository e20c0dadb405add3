"""curriculoss.integrations.lightning: the example flags the noisy digits, data parameters train under
Lightning as in a plain loop, and the recorder's state survives a checkpoint."""
import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from curriculoss import DataParameters, IndexedDataset
from curriculoss.integrations.lightning import DataParametersCallback, RecorderCallback
from curriculoss.signals import open_signals

from _helpers import (DP_OPTIMIZER, accumulate_gradients, assert_example_flags_the_noisy_digits, assert_trained_alike,
                      endless, framework_model_parts, framework_samples, step_and_zero)


L = pytest.importorskip("lightning")


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning_digits.py"


N, C, BATCH = 96, 4, 16


@pytest.fixture(autouse=True)
def _quiet_single_thread(one_thread):
    """Lightning's banners off; one thread (these models are tiny: more threads only contend)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own use of a deprecated torch name
        warnings.filterwarnings("ignore", "The dirpath has changed")  # resuming into another folder
        yield


def _data():
    return IndexedDataset(TensorDataset(*framework_samples(N, C)))


class Classifier(L.LightningModule):
    """A linear-tanh-linear net holding data parameters; AdamW over ``self.parameters()``."""

    def __init__(self, level="instance"):
        super().__init__()
        self.net, self.dp = framework_model_parts(C, N, level)

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        logits = self.net(x)
        loss = F.cross_entropy(self.dp(logits, y, index), y)
        return {"loss": loss, "logits": logits.detach(), "confidence": self.dp.last_sigma}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)


def _trainer(root=None, callbacks=(), **kwargs):
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(default_root_dir=root, callbacks=list(callbacks), **{**options, **kwargs})


def _plain_loop(net, dp, steps, accumulate, **dp_kwargs):
    """The same training without Lightning, the data parameters outside the model."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.05)
    dp_optimizer = dp.optimizer(**dp_kwargs)
    batches = endless(lambda: DataLoader(_data(), batch_size=BATCH))

    def loss_of(batch):
        x, y, index = batch
        return F.cross_entropy(dp(net(x), y, index), y)

    for _ in range(steps):
        accumulate_gradients(batches, accumulate, loss_of)
        step_and_zero(optimizer, dp_optimizer)


@pytest.mark.parametrize("method", ["superloss", "data-params"])
def test_example_flags_the_noisy_digits(tmp_path, method):
    assert_example_flags_the_noisy_digits(EXAMPLE, method, tmp_path)


@pytest.mark.parametrize("level, accumulate", [("instance", 1), ("joint", 2)])
def test_data_parameters_train_as_in_a_plain_loop(level, accumulate):
    torch.manual_seed(0)
    model = Classifier(level)
    net, dp = copy.deepcopy(model.net), DataParameters(C, N, level=level)
    trainer = _trainer(callbacks=[DataParametersCallback(model.dp, **DP_OPTIMIZER)], max_steps=20,
                       accumulate_grad_batches=accumulate)
    trainer.fit(model, DataLoader(_data(), batch_size=BATCH, shuffle=False))
    assert trainer.global_step == 20
    _plain_loop(net, dp, 20, accumulate, **DP_OPTIMIZER)
    # the data parameters are no parameters of the model (AdamW over self.parameters() leaves them alone)
    assert [n for n, _ in model.named_parameters()] == [f"net.{n}" for n, _ in net.named_parameters()]
    assert_trained_alike(model, net, dp)


def test_data_parameters_step_through_the_grad_scaler():
    def fit(plugins):
        torch.manual_seed(0)
        model = Classifier()
        trainer = _trainer(callbacks=[DataParametersCallback(model.dp)], max_steps=12, plugins=plugins)
        trainer.fit(model, DataLoader(_data(), batch_size=BATCH))
        return model.dp.instance_sigma, trainer

    fp32, _ = fit([])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    fp16, trainer = fit([MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert trainer.precision_plugin.scaler is scaler and scaler.get_scale() > 1
    torch.testing.assert_close(fp16, fp32, rtol=1e-2, atol=1e-2)  # unscaled: else sigma runs to the clamp


def _fit_with_checkpoints(root, epochs, ckpt_path=None, stream=False):
    torch.manual_seed(0)
    model = Classifier()
    recorder = RecorderCallback(N, root, stream=True) if stream else RecorderCallback(N)
    data_parameters = DataParametersCallback(model.dp)
    checkpoint = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}")
    trainer = _trainer(root, [recorder, data_parameters, checkpoint], max_epochs=epochs, enable_checkpointing=True)
    trainer.fit(model, DataLoader(_data(), batch_size=BATCH), ckpt_path=ckpt_path)
    return recorder, model


def test_recorder_and_data_parameters_survive_a_checkpoint(tmp_path):
    straight, straight_model = _fit_with_checkpoints(tmp_path / "straight", 3)
    _fit_with_checkpoints(tmp_path / "first", 2)
    resumed, resumed_model = _fit_with_checkpoints(tmp_path / "resumed", 3, tmp_path / "first" / "epoch=1.ckpt")
    assert resumed.recorder.epochs == straight.recorder.epochs == 3
    for name in ("loss", "confidence", "margin"):
        torch.testing.assert_close(resumed.recorder.signal(name), straight.recorder.signal(name))
    torch.testing.assert_close(resumed_model.dp.instance_sigma, straight_model.dp.instance_sigma)
    assert resumed.saved_path == tmp_path / "resumed" / "signals.npz" and resumed.saved_path.exists()


def test_a_streaming_recorder_resumes_in_its_folder(tmp_path):
    straight, _ = _fit_with_checkpoints(tmp_path / "straight", 3)
    _fit_with_checkpoints(tmp_path / "run", 2, stream=True)
    resumed, _ = _fit_with_checkpoints(tmp_path / "run", 3, tmp_path / "run" / "epoch=1.ckpt", stream=True)
    assert resumed.saved_path == tmp_path / "run" / "signals"
    signals = open_signals(tmp_path / "run")
    for name in ("loss", "confidence", "margin"):
        np.testing.assert_array_equal(np.asarray(signals[name]), straight.recorder.signal(name).numpy())
    with pytest.raises(ValueError, match="path is needed with stream=True"):
        RecorderCallback(N, stream=True)


def test_recorder_state_mid_epoch_round_trips(tmp_path):
    batches = list(DataLoader(_data(), batch_size=BATCH))
    logits = [torch.randn(len(b[1]), C, generator=torch.Generator().manual_seed(i)) for i, b in enumerate(batches)]

    def feed(callback, steps):
        for step in steps:
            callback.on_train_batch_end(None, None, {"loss": 0.0, "logits": logits[step]}, batches[step], step)

    straight, first = RecorderCallback(N), RecorderCallback(N)
    for callback in (straight, first):
        feed(callback, range(6))
        callback.on_train_epoch_end(None, None)
        feed(callback, range(3))
    torch.save(first.state_dict(), tmp_path / "state.pt")  # in the middle of the second epoch
    resumed = RecorderCallback(N)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for callback in (straight, resumed):
        feed(callback, range(3, 6))
        callback.on_train_epoch_end(None, None)
    assert resumed.recorder.epochs == 2
    for name in ("loss", "margin"):
        torch.testing.assert_close(resumed.recorder.signal(name), straight.recorder.signal(name))


def test_recorder_reads_dict_batches_and_named_keys():
    callback = RecorderCallback(10, label_key="target", index_key="id", logits_key="scores")
    batch = {"pixel_values": torch.zeros(3, 4), "target": torch.tensor([0, 1, 2]), "id": torch.tensor([7, 8, 9])}
    callback.on_train_batch_end(None, None, {"loss": 0.0, "scores": torch.eye(3)}, batch, 0)
    default = RecorderCallback(10)
    default.on_train_batch_end(None, None, {"logits": torch.eye(3), "confidence": torch.ones(3)},
                               {"label": torch.tensor([0, 1, 2]), "index": torch.tensor([7, 8, 9])}, 0)
    for cb in (callback, default):
        cb.on_train_epoch_end(None, None)
        assert cb.recorder.labels[7:].tolist() == [0, 1, 2]
        assert cb.recorder.signal("margin")[0, 7:].tolist() == [1.0, 1.0, 1.0]
    assert default.recorder.signal("confidence")[0, 7:].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="index_key"):
        RecorderCallback(10).on_train_batch_end(None, None, {"logits": torch.eye(3)}, {"labels": batch["target"]}, 0)


def test_recorder_says_what_training_step_must_return():
    class BareLoss(Classifier):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    with pytest.raises(ValueError, match=r"training_step must return \{'loss': loss, 'logits': logits.detach\(\)\}"):
        _trainer(callbacks=[RecorderCallback(N)], max_steps=1).fit(BareLoss(), DataLoader(_data(), batch_size=BATCH))
