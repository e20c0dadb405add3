"""Which score and window rank a run's mislabelled samples best, at every run length? (how the default
of `curriculoss flag` was chosen)

For each method x noise setting x run length, one `curriculoss train` run (kept in --runs, read back when
finished there), then every candidate score from its signals.npz, scored against the run's known noise mask
(training labels only; no test set is used): AUROC, precision at k (k = the true number of changed
labels) and the estimated number of issues (`curriculoss.flag.estimate_num_issues`) against the truth.

    python benchmarks/bench_flag_scores.py --runs runs/flag_scores                      # digits, MLP
    python benchmarks/bench_flag_scores.py --runs runs/flag_scores_mnist --dataset idx \\
        --data-dir MNIST_DIR --limit 10000 --model lenet --epochs 15 50 --methods ce

``MNIST_DIR`` is a folder holding the MNIST IDX files; ``--json FILE`` writes the figures with the command,
the machine and the date.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from _results import begin, parser

from curriculoss import flag
from curriculoss.harness.train import TrainConfig, train_or_reuse
from curriculoss.signals import open_signals

#: (label, score, window) of every candidate.
CANDIDATES = [
    ("aum, early window", "aum", "auto"),
    ("aum, all epochs", "aum", "all"),
    ("loss, last half", "loss", 0.5),
    ("loss, all epochs", "loss", "all"),
    ("loss, early window", "loss", "auto"),
    ("confidence, last half", None, 0.5),
    ("confidence, all epochs", None, "all"),
]
OWN = {"superloss": "superloss", "data-params": "data-params"}


def evaluate_run(signals, method: str) -> dict[str, dict]:
    out = {}
    mask = signals["noise_mask"]
    for label, score, window in CANDIDATES:
        score = score or OWN.get(method)
        if score is None:
            continue
        _, scores = flag.run_scores(signals, score, window=window)
        scores = np.where(np.isnan(scores), 1.0, scores)
        if mask.any():
            f = flag.evaluate(scores, mask, score=score)
        else:
            f = {"auroc": float("nan"), "precision_at_k": float("nan"), "num_noisy": 0.0,
                 "estimated_num_issues": float(flag.estimate_num_issues(scores, score=score))}
        out[label] = {k: f[k] for k in ("auroc", "precision_at_k", "estimated_num_issues", "num_noisy")}
    return out


def main() -> None:
    p = parser(__doc__, json_help="also write the figures to this file", seed=0)
    p.add_argument("--runs", required=True, help="folder of the run folders (reused when there)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int)
    p.add_argument("--model", default="mlp")
    p.add_argument("--methods", nargs="+", default=["ce", "superloss", "data-params"])
    p.add_argument("--settings", nargs="+", default=["symmetric:0.4", "symmetric:0.2", "pair:0.2", "symmetric:0.0"])
    p.add_argument("--epochs", nargs="+", type=int, default=[15, 20, 50, 200])
    args = p.parse_args()
    started = begin(args)

    results = {}
    for method in args.methods:
        for setting in args.settings:
            kind, rate = setting.split(":")
            for epochs in args.epochs:
                run = Path(args.runs) / f"{method}_{kind}{rate}_e{epochs}_s{args.seed}"
                cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, model=args.model,
                                  method=method, noise=kind, noise_rate=float(rate), epochs=epochs, seed=args.seed)
                train_or_reuse(cfg, run, progress=False)
                signals = {key: np.asarray(value) for key, value in open_signals(run).items()}
                window = flag.select_epochs(signals["margin"])
                rows = evaluate_run(signals, method)
                results[run.name] = {"method": method, "noise": kind, "noise_rate": float(rate), "epochs": epochs,
                                     "window": window, "num_samples": int(signals["labels"].size), "rows": rows}
                n = signals["labels"].size
                print(f"\n{method}, {kind} {rate}, {epochs} epochs (early window: epochs 1-{window}; "
                      f"{int(signals['noise_mask'].sum())} of {n} labels changed)")
                print("| score | AUROC | precision@k | estimated / true count |")
                print("|---|---|---|---|")
                for label, f in rows.items():
                    print(f"| {label} | {f['auroc']:.4f} | {f['precision_at_k']:.4f} | "
                          f"{int(f['estimated_num_issues'])} / {int(f['num_noisy'])} |", flush=True)
    started.write(args.json, "flag-scores", {"dataset": args.dataset, "limit": args.limit, "model": args.model,
                                             "seed": args.seed, "runs": results}, roles={"--data-dir": "MNIST_DIR"})

if __name__ == "__main__":
    main()
