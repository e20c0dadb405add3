"""Why do joint data parameters lose to CE on the digits? The class sigmas and per-class accuracy of one run.

    OMP_NUM_THREADS=1 python benchmarks/probes/data_params_joint.py [--seed 0] [--weight-decay-mode per_row]
        [--out runs/joint_probe]

Trains (or reads back) the digits cell of ``curriculoss reproduce data-params-noise`` for the variant
'data-params joint': its selected hyper-parameters, 40 % noise, one seed of the preset's. Prints the final test accuracy,
the learned class sigmas and the test accuracy of each class: a class whose sigma ran away is rarely
predicted. ``--weight-decay-mode per_row`` counts the class weight decay once per present class instead
of once per sample, as the reference implementation does (the default, ``per_sample``).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from curriculoss.harness import data as datasets
from curriculoss.harness.models import build_model
from curriculoss.harness.reproduce import variant_config
from curriculoss.harness.train import load_checkpoint, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/joint_probe", help="the run folder (read back when finished)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay-mode", choices=("per_sample", "per_row"), default="per_sample")
    p.add_argument("--epochs", type=int, help="fewer epochs than the preset's (for a quick look only)")
    args = p.parse_args()
    cfg = variant_config("data-params-noise", "data-params joint", noise_rate=0.4, seed=args.seed)
    cfg = replace(cfg, epochs=args.epochs or cfg.epochs,
                  options=replace(cfg.options, dp_weight_decay_mode=args.weight_decay_mode))
    print(f"config: lr {cfg.lr}, instance lr {cfg.options.dp_instance_lr}, class lr {cfg.options.dp_class_lr}, "
          f"weight decay per {cfg.options.dp_weight_decay_mode.removeprefix('per_')}")
    results = train(cfg, args.out, resume=True, progress=False)
    print(f"final test accuracy {results['final']:.4f}")

    state = load_checkpoint(f"{args.out}/checkpoint.pt")
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


if __name__ == "__main__":
    main()
