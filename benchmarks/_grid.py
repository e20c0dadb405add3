"""Grids of `curriculoss train` runs for the benchmarks: the data sets they train on, the configuration the
command line builds from its flags, and one runner that trains a list of run folders (a finished one is
read back, an interrupted one resumes: ``curriculoss.harness.train.train_or_reuse``).

Data sets (``make_data``), generated once under a folder:

- ``digits``: scikit-learn's 8x8 digits (built in), MLP and LeNet-5;
- ``digits-moved``: the same digits rotated by up to +-20 degrees and shifted by up to one pixel (an
  npz), MLP and LeNet-5;
- ``tabular``: 3,000 + 1,000 samples of 20 features in 10 classes from
  ``sklearn.datasets.make_classification`` (csv), MLP;
- with an MNIST folder: ``mnist-3k`` (the first 3,000 MNIST training images, 2,000 test images, an
  npz), LeNet-5, and ``mnist-14px`` (the same images average-pooled to 14x14), MLP.
"""
from __future__ import annotations

import csv
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["make_data", "grid_data", "cli_config", "run_all", "collapsed"]


def make_data(root: Path, mnist: str | None) -> dict[str, tuple[str, str, list[str]]]:
    """name -> (--dataset, --data-dir, models); generated files are written once under ``root``."""
    from curriculoss.harness import data as datasets

    root.mkdir(parents=True, exist_ok=True)
    out = {"digits": ("digits", "", ["mlp", "lenet"])}

    moved = root / "digits-moved.npz"
    if not moved.exists():
        from scipy import ndimage

        d = datasets.load("digits")
        rng = np.random.default_rng(0)

        def move(x):
            res = np.empty_like(x)
            for i, img in enumerate(x[:, 0]):
                img = ndimage.rotate(img, rng.uniform(-20, 20), reshape=False, order=1, mode="nearest")
                res[i, 0] = ndimage.shift(img, rng.integers(-1, 2, size=2), order=0, mode="nearest")
            return res

        np.savez(moved, x=move(d.x_train), y=d.y_train, x_test=move(d.x_test), y_test=d.y_test)
    out["digits-moved"] = ("npz", str(moved), ["mlp", "lenet"])

    tab = root / "tabular"
    if not (tab / "train.csv").exists():
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=4000, n_features=20, n_informative=12, n_redundant=4, n_classes=10,
                                   n_clusters_per_class=1, class_sep=1.5, random_state=0)
        tab.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", slice(0, 3000)), ("test", slice(3000, None))):
            np.savetxt(tab / f"{name}.csv", np.column_stack([x[part], y[part]]), delimiter=",", fmt="%.6g",
                       header=",".join([f"f{i}" for i in range(20)] + ["label"]), comments="")
    out["tabular"] = ("csv", str(tab), ["mlp"])

    if mnist:
        full, small = root / "mnist-3k.npz", root / "mnist-14px.npz"
        if not small.exists():
            d = datasets.load("idx", data_dir=mnist, limit=3000)
            np.savez(full, x=d.x_train, y=d.y_train, x_test=d.x_test[:2000], y_test=d.y_test[:2000])
            pool = lambda x: x.reshape(len(x), 1, 14, 2, 14, 2).mean(axis=(3, 5))  # noqa: E731
            np.savez(small, x=pool(d.x_train), y=d.y_train, x_test=pool(d.x_test[:2000]), y_test=d.y_test[:2000])
        out["mnist-3k"] = ("npz", str(full), ["lenet"])
        out["mnist-14px"] = ("npz", str(small), ["mlp"])
    return out


def grid_data(out: Path, mnist: str | None = None, only: list[str] | None = None) -> dict[str, tuple[str, str, list[str]]]:
    """``make_data`` under ``out/data``, keeping the data sets named in ``only`` (all without); one thread per
    run unless ``OMP_NUM_THREADS`` says otherwise."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = make_data(out / "data", mnist)
    return {k: v for k, v in data.items() if not only or k in only}


def grid_arguments(p, out: str, jobs: int, seeds: list[int], rates: list[float], methods: list[str]) -> None:
    """The options every grid runner shares: data sets, rates, seeds, methods, extra train flags, jobs, out."""
    p.add_argument("--mnist", metavar="MNIST_DIR",
                   help="folder of the MNIST IDX files (adds mnist-3k with LeNet-5 and mnist-14px with the MLP)")
    p.add_argument("--only", nargs="+", help="data sets to run (default: all)")
    p.add_argument("--rates", type=float, nargs="+", default=rates,
                   help=f"noise rates (default {' '.join(map(str, rates))}); 0 runs once")
    p.add_argument("--seeds", type=int, nargs="+", default=seeds)
    p.add_argument("--methods", nargs="+", default=methods, choices=methods, metavar="METHOD",
                   help="methods to run (default: all; fewer for a quick look only)")
    p.add_argument("--extra", default="", help="more train flags for every run, e.g. '--holdout 0.1' (give the runs "
                                               "their own --out: a run folder records the flags it was trained with)")
    p.add_argument("--jobs", type=int, default=jobs, help="runs in parallel, one thread each")
    p.add_argument("--out", default=out)


def cli_config(dataset: str, data_dir: str, model: str, method: str, rate: float, seed: int, extra: list[str]):
    """The TrainConfig ``curriculoss train`` builds from these flags (and its defaults for the rest)."""
    from curriculoss.harness.arguments import build_config
    from curriculoss.harness.cli import build_parser

    argv = ["train", "--dataset", dataset, "--model", model, "--method", method, "--noise-rate", str(rate),
            "--seed", str(seed), *(["--data-dir", data_dir] if data_dir else []), *extra]
    args = build_parser().parse_args(argv)
    return build_config(args, method, rate, seed)


def run_one(job: tuple) -> dict:
    """One run folder ``(cfg, folder)``, trained or read back, on one thread; a run read back has its
    divergence judged again by the current rule (from its ``metrics.csv`` and labels)."""
    import torch

    from curriculoss.harness.train import train_or_reuse

    torch.set_num_threads(1)
    cfg, folder = job
    reused = (Path(folder) / "results.json").exists()
    results = train_or_reuse(cfg, folder, progress=False)
    return _recheck(results, Path(folder)) if reused else results


def _recheck(results: dict, folder: Path) -> dict:
    from curriculoss.harness.divergence import chance_accuracy, find_divergence
    from curriculoss.signals import open_signals

    with open(folder / "metrics.csv") as fh:
        history = list(csv.DictReader(fh))
    labels = np.asarray(open_signals(folder)["labels"])
    epoch, _ = find_divergence(history, chance_accuracy(labels, int(labels.max()) + 1), complete=True)
    return {**results, "diverged": epoch is not None, "diverged_epoch": epoch}


def run_all(jobs: list[tuple], n_jobs: int, run=run_one) -> list[dict]:
    """The results of every job (``(cfg, folder)`` for ``run_one``), in order, ``n_jobs`` processes at a time."""
    if n_jobs <= 1:
        return [run(j) for j in jobs]
    with ProcessPoolExecutor(n_jobs) as pool:
        return list(pool.map(run, jobs))


def collapsed(results: dict) -> bool:
    """A diverged run, or one whose final accuracy is within 2 points of 10-class chance."""
    return bool(results.get("diverged")) or not math.isfinite(results["final"]) or results["final"] <= 0.12
