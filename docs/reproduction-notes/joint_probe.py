"""Why joint data parameters lose on digits: class sigmas and per-class test accuracy of one run.

    python docs/reproduction-notes/joint_probe.py [RUN_DIR]

Trains (or reads back) the digits data-params-noise 'joint' cell with its selected hyper-parameters
(seed 0, 40 % noise) and prints the learned class sigmas and the test accuracy of each class.
"""
import sys
from dataclasses import replace

import torch

from curriculoss.harness import data as datasets
from curriculoss.harness.models import build_model
from curriculoss.harness.reproduce import PRESETS, _base_config, _chosen, _variant_config, load_hparams
from curriculoss.harness.train import load_checkpoint, train

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/joint_probe"
preset = PRESETS["data-params-noise"]
label = "data-params joint"
base = replace(_base_config(None, preset, quick=False), noise_rate=0.4, seed=0)
cfg = _variant_config(base, preset.variants[label], _chosen(load_hparams(), "digits", "data-params-noise", label))
print(f"config: lr {cfg.lr}, instance lr {cfg.options.dp_instance_lr}, class lr {cfg.options.dp_class_lr}")
results = train(cfg, run_dir, resume=True, progress=False)
print(f"final test accuracy {results['final']:.4f}")

state = load_checkpoint(f"{run_dir}/checkpoint.pt")
class_sigma = next(v for k, v in state["method"].items() if k.endswith("log_class_sigma")).exp()
print("class sigma:", " ".join(f"{c}:{s:.2f}" for c, s in enumerate(class_sigma.tolist())))

data = datasets.load("digits")
model = build_model(cfg.model, tuple(data.input_shape), data.num_classes)
model.load_state_dict(state["model"])
model.eval()
with torch.no_grad():
    pred = model(torch.from_numpy(data.x_test)).argmax(1)
y = torch.from_numpy(data.y_test)
print("test accuracy by class:", " ".join(f"{c}:{(pred[y == c] == c).float().mean():.2f}" for c in range(10)))
