"""Why can MAE and GCE collapse with LeNet-5 on the 8x8 digits? A sweep of learning rate, warm-up and
initialisation (see docs/defaults.md, "LeNet-5's initialisation").

    OMP_NUM_THREADS=1 python benchmarks/probes/bounded_losses.py [--methods mae gce ce] [--lrs 0.03 0.1]
        [--seeds 0 1 2] [--warmup 5] [--init he] [--extra "--epochs 100"] [--jobs 2] [--out runs/probe_bounded]

Each cell is one ``curriculoss train`` run with the command line's defaults but for the flags swept, on
``digits`` and ``digits-moved`` (the defaults grid's rotated and shifted digits, ``_grid.py``), LeNet-5, 0 % and
40 % symmetric noise; it prints the final test accuracy per seed (``*``: collapsed, as the grid counts
it) and the mean. ``--init torch`` trains ``lenet-torchinit`` (PyTorch's default layer initialisation) instead
of ``lenet`` (He-initialised, output layer at zero).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared grid runner
from _grid import cli_config, collapsed, grid_data, run_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["mae", "gce", "ce"])
    parser.add_argument("--lrs", nargs="+", default=["0.03"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--warmup", default="0")
    parser.add_argument("--init", choices=["he", "torch"], default="he",
                        help="LeNet-5's initialisation: he (the command line's lenet) or torch (lenet-torchinit)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--extra", default="", help="more train flags for every run, e.g. '--epochs 100'")
    parser.add_argument("--out", default="runs/probe_bounded")
    args = parser.parse_args()
    out = Path(args.out)
    data = grid_data(out)
    model = "lenet" if args.init == "he" else "lenet-torchinit"
    jobs, keys = [], []
    for name in ("digits", "digits-moved"):
        dataset, data_dir, _ = data[name]
        for method, lr, rate, seed in itertools.product(args.methods, args.lrs, (0.0, 0.4), args.seeds):
            cfg = cli_config(dataset, data_dir, model, method, rate, seed, ["--lr", lr, "--warmup", args.warmup, *args.extra.split()])
            tag = args.extra.replace("--", "").replace(" ", "")
            folder = out / f"{args.init}-warmup{args.warmup}{tag}" / name / method / f"lr{lr}" / f"rate{rate:g}" / f"seed{seed}"
            jobs.append((cfg, str(folder)))
            keys.append((name, method, lr, rate))
    cells: dict[tuple, list[dict]] = {}
    for key, result in zip(keys, run_all(jobs, args.jobs)):
        cells.setdefault(key, []).append(result)
    print(f"init {args.init}, warm-up {args.warmup} epochs; final test accuracy (%) per seed {args.seeds}, * = collapsed")
    print("| data set | method | lr | noise | per seed | mean |\n|---|---|---|---|---|---|")
    for (name, method, lr, rate), runs in cells.items():
        seeds = " ".join(f"{100 * r['final']:.1f}{'*' if collapsed(r) else ''}" for r in runs)
        print(f"| {name} | {method} | {lr} | {rate:.0%} | {seeds} | {100 * np.mean([r['final'] for r in runs]):.1f} |")


if __name__ == "__main__":
    main()
