"""curriculoss.integrations.transformers: the example flags the noisy digits, data parameters train under
the Hugging Face Trainer as in a plain loop, and the recorder closes, saves and checkpoints its epochs."""
import copy
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import Trainer, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from curriculoss import DataParameters, IndexedDataset  # noqa: E402
from curriculoss.integrations.transformers import (  # noqa: E402
    RECORDER_FILE, DataParametersCallback, RecorderCallback)
from _helpers import run_example  # noqa: E402


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "huggingface_trainer_digits.py"


N, C, BATCH, LR = 96, 4, 16, 0.05


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    """The Trainer's messages off; one thread (these models are tiny: more threads only contend)."""
    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    yield
    torch.set_num_threads(threads)
    hf_logging.set_verbosity(verbosity)


class Samples(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(N, 8, generator=g), torch.randint(0, C, (N,), generator=g)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": int(self.y[i])}


class Net(nn.Module):
    def __init__(self, level="instance"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, C))
        self.dp = DataParameters(C, N, level=level)

    def forward(self, x):
        return {"logits": self.net(x)}


class DataParametersTrainer(Trainer):
    def __init__(self, *args, recorder=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels, index = inputs.pop("labels"), inputs.pop("index", None)
        logits = model(**inputs)["logits"]
        loss = F.cross_entropy(self.model.dp(logits, labels, index), labels)
        if model.training and self.recorder is not None:
            self.recorder.update(index, logits, labels, confidence=self.model.dp.last_sigma)
        return (loss, {"logits": logits}) if return_outputs else loss


def _args(out, **kwargs):
    options = dict(per_device_train_batch_size=BATCH, learning_rate=LR, report_to=[], use_cpu=True,
                   save_strategy="no", logging_strategy="no", remove_unused_columns=False, disable_tqdm=True,
                   train_sampling_strategy="sequential")
    return TrainingArguments(output_dir=str(out), **{**options, **kwargs})


def _plain_loop(net, dp, args, accumulate, **dp_kwargs):
    """The Trainer's defaults by hand (AdamW, linear decay to 0, gradient norm clipped at 1),
    the data parameters outside the model."""
    steps = args.max_steps
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=args.weight_decay,
                                  fused=args.optim == "adamw_torch_fused")
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
    dp_optimizer = dp.optimizer(**dp_kwargs)
    batches = iter(())
    for _ in range(steps):
        for _ in range(accumulate):
            batch = next(batches, None)
            if batch is None:
                batches = iter(DataLoader(IndexedDataset(Samples()), batch_size=BATCH))
                batch = next(batches)
            y, index = batch["labels"], batch["index"]
            (F.cross_entropy(dp(net(batch["x"]), y, index), y) / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
        optimizer.step()
        dp_optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        dp_optimizer.zero_grad()


@pytest.mark.parametrize("method", ["superloss", "data-params"])
def test_example_flags_the_noisy_digits(tmp_path, method):
    figures = run_example(EXAMPLE, ["--method", method, "--epochs", "6", "--out", str(tmp_path)])
    assert (tmp_path / "signals.npz").exists() and (tmp_path / "flag.json").exists()
    assert figures["auroc"] > 0.9


@pytest.mark.parametrize("level, accumulate", [("instance", 1), ("joint", 2)])
def test_data_parameters_train_as_in_a_plain_loop(tmp_path, level, accumulate):
    torch.manual_seed(0)
    model = Net(level)
    net, dp = copy.deepcopy(model.net), DataParameters(C, N, level=level)
    kwargs = dict(instance_lr=0.5, class_lr=0.2, class_weight_decay=1e-3)
    args = _args(tmp_path, max_steps=20, gradient_accumulation_steps=accumulate)
    trainer = DataParametersTrainer(model, args, train_dataset=IndexedDataset(Samples()),
                                    callbacks=[DataParametersCallback(model.dp, **kwargs)])
    trainer.train()
    assert trainer.state.global_step == 20
    _plain_loop(net, dp, args, accumulate, **kwargs)
    assert not torch.equal(dp.log_instance_sigma, torch.zeros(N))  # they did train
    for ours, reference in zip(model.dp.data_parameters(), dp.data_parameters()):
        torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-6)
    for ours, reference in zip(model.net.parameters(), net.parameters()):
        torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-6)


def test_data_parameters_step_through_the_grad_scaler():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    dp = DataParameters(C, N)
    callback = DataParametersCallback(dp)
    callback.on_train_begin(None, None, None)
    reference = DataParameters(C, N)
    reference_optimizer = reference.optimizer()
    logits, y, index = torch.randn(BATCH, C), torch.randint(0, C, (BATCH,)), torch.arange(BATCH)
    scaler.scale(F.cross_entropy(dp(logits, y, index), y)).backward()
    F.cross_entropy(reference(logits, y, index), y).backward()
    # Under fp16 the Trainer hands its callbacks accelerate's AcceleratedOptimizer, which holds the scaler
    # (accelerate makes none on the CPU, so it is stood in for here).
    callback.on_pre_optimizer_step(None, None, None, optimizer=SimpleNamespace(scaler=scaler))
    reference_optimizer.step()
    torch.testing.assert_close(dp.log_instance_sigma.detach(), reference.log_instance_sigma.detach())
    assert dp.log_instance_sigma.grad is None  # zeroed: the Trainer's model.zero_grad() does not reach it


def test_recorder_closes_saves_and_checkpoints_epochs(tmp_path):
    torch.manual_seed(0)
    model = Net()
    mask = np.zeros(N, bool)
    mask[:10] = True
    recorder = RecorderCallback(N, noise_mask=mask)
    args = _args(tmp_path, num_train_epochs=2, save_strategy="epoch", lr_scheduler_type="constant")
    trainer = DataParametersTrainer(model, args, train_dataset=IndexedDataset(Samples()), recorder=recorder,
                                    callbacks=[recorder, DataParametersCallback(model.dp)])
    trainer.train()
    assert recorder.recorder.epochs == 2 and not torch.isnan(recorder.recorder.signal("margin")).any()
    assert recorder.saved_path == tmp_path / "signals.npz"
    saved = np.load(recorder.saved_path)
    assert saved["loss"].shape == (2, N) and saved["noise_mask"].sum() == 10
    assert np.isfinite(saved["confidence"]).all() and not np.allclose(saved["confidence"][-1], 1.0)  # dp.last_sigma
    last = max(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert (last / RECORDER_FILE).exists()
    resumed = RecorderCallback(N)
    resumed.load_checkpoint(last)
    torch.testing.assert_close(resumed.recorder.signal("margin"), recorder.recorder.signal("margin"))
    optimizer = DataParametersCallback(model.dp)
    optimizer.load_checkpoint(last)
    optimizer.on_train_begin(args, None, None)
    assert optimizer.optimizer.state_dict()["state"][0]["step"] == trainer.state.global_step
