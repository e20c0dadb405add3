"""How well does one training run rank the mislabelled samples, against cleanlab on 5-fold cross-validation?

On an MNIST subset (or a generated data set, `--dataset blobs`) with injected noise, for each of our
methods one `curriculoss train` run gives the per-sample signals that `curriculoss.flag` turns into
scores: every score of the run (the default AUM over the early-learning window, the loss over the last
half and over all epochs, the method's own confidence), each with its estimated number of issues. cleanlab gets out-of-sample predicted probabilities from 5-fold cross-validation of
the same model, optimiser and epochs (plain cross-entropy), then `cleanlab.filter.find_label_issues`
(ranked by self-confidence) and `cleanlab.rank.get_label_quality_scores` for AUROC / AP.

Compute is reported as training sample-epochs (one pass over one sample) and wall time.

    python benchmarks/bench_flag.py --data-dir MNIST_DIR --limit 10000 --epochs 15
    python benchmarks/bench_flag.py --dataset blobs --model mlp --epochs 200

``MNIST_DIR`` is a folder holding the MNIST IDX files (plain or gzipped). `--keep DIR` keeps each run's
signals.npz and cleanlab's probabilities; `--json FILE` writes the figures with the command, the machine
and the date. Needs cleanlab (`pip install "curriculoss[bench]"`).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _results import begin, parser
from _steps import ce_epoch

from curriculoss import flag
from curriculoss.harness.methods import MethodOptions
from curriculoss.harness.models import build_model
from curriculoss.harness.train import TrainConfig, prepare_data, train
from curriculoss.signals import open_signals

SCORE_OF = {"ce": "loss", "superloss": "superloss", "data-params": "data-params", "imae": "imae"}


def _fit_predict(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, x_eval: torch.Tensor, num_classes: int,
                 seed: int) -> np.ndarray:
    """Train cfg.model with CE exactly as `curriculoss train` does (SGD, cosine, same batch); return probabilities.

    Its own loop: cleanlab needs the probabilities of the held-out fold, which a `curriculoss train` run
    does not return."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, tuple(x.shape[1:]), num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    for epoch in range(cfg.epochs):
        ce_epoch(model, opt, x, y, cfg.batch_size, seed=seed * 100_003 + epoch)
        sched.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x_eval[i:i + 2048]).softmax(1) for i in range(0, len(x_eval), 2048)]).numpy()


def cleanlab_cv(cfg: TrainConfig, folds: int = 5, keep: Path | None = None) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    data, noisy = prepare_data(cfg)
    x = torch.from_numpy(data.x_train)
    labels = np.asarray(noisy.labels)
    y = torch.from_numpy(labels).long()
    probs = np.zeros((len(labels), data.num_classes))
    t0 = time.perf_counter()
    sample_epochs = 0
    for k, (tr, ev) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=cfg.seed).split(labels, labels)):
        tr_t, ev_t = torch.from_numpy(tr), torch.from_numpy(ev)
        probs[ev] = _fit_predict(cfg, x[tr_t], y[tr_t], x[ev_t], data.num_classes, cfg.seed + k)
        sample_epochs += len(tr) * cfg.epochs
    seconds = time.perf_counter() - t0
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        np.savez(keep / "cleanlab_probs.npz", probs=probs, labels=labels, noise_mask=np.asarray(noisy.mask))
    scores = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    figures = flag.evaluate(scores, np.asarray(noisy.mask))
    k_true = int(np.asarray(noisy.mask).sum())
    # cleanlab's own count of issues, scored against the truth
    found = np.zeros(len(labels), bool)
    found[issues] = True
    figures.update(cleanlab_num_issues=int(found.sum()), estimated_num_issues=float(found.sum()),
                   cleanlab_precision=float(noisy.mask[found].mean()) if found.any() else float("nan"),
                   cleanlab_recall=float(found[noisy.mask].mean()) if k_true else float("nan"))
    return {"figures": figures, "seconds": seconds, "sample_epochs": sample_epochs}


#: The scores compared on each run: (label, score, window).
SCORES = [("aum, early window (default)", "aum", "auto"), ("aum, all epochs", "aum", "all"),
          ("loss, last half", "loss", 0.5), ("loss, all epochs", "loss", "all")]


def ours(cfg: TrainConfig, method: str, out: Path, epochs: int) -> dict[str, dict]:
    run_cfg = replace(cfg, method=method, epochs=epochs)
    t0 = time.perf_counter()
    train(run_cfg, out / method, progress=False)
    seconds = time.perf_counter() - t0
    signals = {key: np.asarray(value) for key, value in open_signals(out / method).items()}
    rows = {}
    scores_to_try = list(SCORES)
    if SCORE_OF[method] != "loss":
        scores_to_try.append((f"{SCORE_OF[method]} confidence, last half", SCORE_OF[method], 0.5))
    for label, score, window in scores_to_try:
        _, scores = flag.run_scores(signals, score, window=window)
        figures = flag.evaluate(scores, signals["noise_mask"], score=score)
        rows[f"{method}: {label}"] = {"figures": figures, "seconds": seconds, "sample_epochs": len(scores) * epochs}
    return rows


def make_blobs(path: Path, seed: int = 0, n: int = 6000) -> Path:
    """A generated 10-class data set: Gaussian clusters in 20 dimensions (sklearn make_classification),
    80 % for training."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=20, n_informative=12, n_redundant=4, n_classes=10,
                               n_clusters_per_class=2, class_sep=1.5, flip_y=0.0, random_state=seed)
    cut = int(0.8 * n)
    np.savez(path, x=x[:cut].astype(np.float32), y=y[:cut], x_test=x[cut:].astype(np.float32), y_test=y[cut:])
    return path


def main() -> None:
    p = parser(__doc__, json_help="also write the figures to this file", seed=0)
    p.add_argument("--data-dir", metavar="MNIST_DIR", help="folder of the MNIST IDX files (--dataset idx)")
    p.add_argument("--dataset", default="idx", help="idx (MNIST files), digits, or blobs (generated)")
    p.add_argument("--model", default="lenet")
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--methods", nargs="+", default=["ce", "superloss", "data-params", "imae"])
    p.add_argument("--settings", nargs="+", default=["symmetric:0.4", "pair:0.2"])
    p.add_argument("--our-epochs", type=int, help="epochs of our single run (default: 4/5 of --epochs, so that "
                   "one run costs 1/5 of cleanlab's 5-fold cross-validation, which trains on 4/5 of the data)")
    p.add_argument("--dp-level", default="instance", choices=("class", "instance", "joint"))
    p.add_argument("--dp-instance-lr", type=float, default=0.1)
    p.add_argument("--keep", help="keep each run's signals.npz and cleanlab's probabilities in this folder")
    args = p.parse_args()
    if args.dataset == "idx" and not args.data_dir:
        p.error("--dataset idx needs --data-dir MNIST_DIR (the folder of the MNIST IDX files)")
    started = begin(args)
    dataset_name = args.dataset
    if args.dataset == "blobs":
        blobs = Path(tempfile.mkdtemp()) / "blobs.npz"
        make_blobs(blobs, seed=args.seed)
        args.dataset, args.data_dir, args.limit = "npz", str(blobs), None

    results = {}
    for setting in args.settings:
        kind, rate = setting.split(":")
        cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir if args.dataset != "digits" else None,
                          limit=args.limit, model=args.model, noise=kind, noise_rate=float(rate), epochs=args.epochs,
                          seed=args.seed,
                          options=MethodOptions(dp_level=args.dp_level, dp_instance_lr=args.dp_instance_lr))
        our_epochs = args.our_epochs or max(1, args.epochs * 4 // 5)
        rows = {}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.keep) / f"{kind}{rate}_e{args.epochs}" if args.keep else Path(tmp)
            for method in args.methods:
                rows.update(ours(cfg, method, out, our_epochs))
            rows["cleanlab 5-fold"] = cleanlab_cv(cfg, keep=out if args.keep else None)
        results[setting] = rows
        base = rows["cleanlab 5-fold"]
        print(f"\n{args.dataset} ({args.limit} samples), {args.model}, {kind} noise {rate}: cleanlab {args.epochs} epochs "
              f"per fold, ours {our_epochs} epochs (data parameters: {args.dp_level}, instance lr {args.dp_instance_lr})")
        print("| ranking | AUROC | AP | precision@k | estimated / true count | sample-epochs | wall s | compute vs cleanlab |")
        print("|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            f = row["figures"]
            print(f"| {name} | {f['auroc']:.4f} | {f['average_precision']:.4f} | {f['precision_at_k']:.4f} | "
                  f"{int(f['estimated_num_issues'])} / {int(f['num_noisy'])} | {row['sample_epochs']:,} | "
                  f"{row['seconds']:.1f} | {row['sample_epochs'] / base['sample_epochs']:.2f}x |")
        f = base["figures"]
        print(f"cleanlab find_label_issues: {f['cleanlab_num_issues']} flagged, precision {f['cleanlab_precision']:.4f}, "
              f"recall {f['cleanlab_recall']:.4f}")
    started.write(args.json, "flag", {
        "dataset": dataset_name, "limit": args.limit, "model": args.model, "epochs_per_fold": args.epochs,
        "our_epochs": args.our_epochs or max(1, args.epochs * 4 // 5), "folds": 5, "seed": args.seed,
        "dp_level": args.dp_level, "dp_instance_lr": args.dp_instance_lr,
        "settings": {setting: {name: {**row["figures"], "seconds": row["seconds"], "sample_epochs": row["sample_epochs"]}
                               for name, row in rows.items()} for setting, rows in results.items()}},
        roles={"--data-dir": "MNIST_DIR"})

if __name__ == "__main__":
    main()
