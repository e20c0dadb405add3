"""curriculoss.integrations.transformers: the example flags the noisy digits, data parameters train under
the Hugging Face Trainer as in a plain loop, and the recorder closes, saves and checkpoints its epochs."""
import copy
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import Trainer, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from curriculoss import DataParameters, IndexedDataset  # noqa: E402
from curriculoss.integrations.transformers import (  # noqa: E402
    RECORDER_FILE, DataParametersCallback, RecorderCallback)
from _helpers import (DP_OPTIMIZER, FrameworkNet, accumulate_gradients,  # noqa: E402
                      assert_example_flags_the_noisy_digits, assert_trained_alike, endless, framework_samples,
                      step_and_zero)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "huggingface_trainer_digits.py"


N, C, BATCH, LR = 96, 4, 16, 0.05


@pytest.fixture(autouse=True)
def _quiet_single_thread(one_thread):
    """The Trainer's messages off; one thread (these models are tiny: more threads only contend)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(verbosity)


class Samples(Dataset):
    def __init__(self):
        self.x, self.y = framework_samples(N, C)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": int(self.y[i])}


def Net(level="instance") -> FrameworkNet:
    return FrameworkNet(C, N, level)


class DataParametersTrainer(Trainer):
    def __init__(self, *args, recorder=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy on the logits scaled by the data parameters; training batches are recorded. The
        batches carry `x`, `labels` and (from `IndexedDataset`) `index`; `Net` takes `x` alone."""
        logits = model(inputs["x"])["logits"]
        target, index = inputs["labels"], inputs.get("index")
        loss = F.cross_entropy(self.model.dp(logits, target, index), target)
        if self.recorder is not None and model.training:
            self.recorder.update(index, logits, target, confidence=self.model.dp.last_sigma)
        if not return_outputs:
            return loss
        return loss, {"logits": logits}


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
    batches = endless(lambda: DataLoader(IndexedDataset(Samples()), batch_size=BATCH))

    def loss_of(batch):
        y, index = batch["labels"], batch["index"]
        return F.cross_entropy(dp(net(batch["x"]), y, index), y)

    for _ in range(steps):
        accumulate_gradients(batches, accumulate, loss_of)
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
        step_and_zero(optimizer, dp_optimizer)
        schedule.step()


@pytest.mark.parametrize("level, accumulate", [("instance", 1), ("joint", 2)])
def test_data_parameters_train_as_in_a_plain_loop(tmp_path, level, accumulate):
    torch.manual_seed(0)
    model = Net(level)
    net, dp = copy.deepcopy(model.net), DataParameters(C, N, level=level)
    args = _args(tmp_path, max_steps=20, gradient_accumulation_steps=accumulate)
    trainer = DataParametersTrainer(model, args, train_dataset=IndexedDataset(Samples()),
                                    callbacks=[DataParametersCallback(model.dp, **DP_OPTIMIZER)])
    trainer.train()
    assert trainer.state.global_step == 20
    _plain_loop(net, dp, args, accumulate, **DP_OPTIMIZER)
    assert_trained_alike(model, net, dp)


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


@pytest.mark.parametrize("method", ["superloss", "data-params"])
def test_example_flags_the_noisy_digits(tmp_path, method):
    assert_example_flags_the_noisy_digits(EXAMPLE, method, tmp_path)
