"""Why do SuperLoss, data parameters and IMAE memorise wrong labels at 80 % noise, and which setting stops it?

    OMP_NUM_THREADS=1 python benchmarks/probes/memorisation.py [--mnist MNIST_DIR] [--rates 0 0.8] [--seeds 100]
        [--jobs 2] [--out runs/probe_memorisation] [--json docs/results/memorisation.json]
        [--figure docs/methods/memorisation.png]

Never on a test set: each data set of the defaults grid (``_grid.py``) is split once, 80 % of its training
set to train on and the other 20 % held out with its true labels. Every run is one ``curriculoss train``
with the command line's defaults (symmetric noise on the training part), plus, for the candidates, the
one flag each changes (``CANDIDATES``). The held-out accuracy per epoch gives each run's best and final.

The trace (``TRACE_DATA``: mnist-3k with ``--mnist``, else tabular; 80 % noise; first seed) reads each
run's signals folder: per epoch, the share of the training gradient that the samples with a wrong label
carry, the median per-sample weight of wrong and right labels, and the share of wrong labels the network
has fitted. A sample's gradient is measured by the L1 norm of its loss's gradient with respect to its
logits, computed in closed form from the recorded per-sample loss and the method's recorded confidence:
CE ``2(1 - p)``; GCE ``p^q 2(1 - p)``; SuperLoss ``sigma* 2(1 - p)``; IMAE ``w`` (its unit-norm direction
times ``w = exp(T p (1 - p))``); data parameters ``2(1 - p) / sigma_i``, with ``p`` the probability of the
(noisy) label (for data parameters, of the logits before their division by ``sigma_i``: an approximation).
A wrong label counts as fitted when ``p > 0.5``.
"""
from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared grid runner
from _grid import cli_config, grid_arguments, grid_data, run_all  # noqa: E402
from _results import Started, parser  # noqa: E402

METHODS = ["ce", "gce", "sce", "superloss", "data-params", "imae"]
#: name -> (method, the flags it adds to the defaults), from a table of "name: method flags..."
CANDIDATES = {name: (flags.split()[0], flags.split()[1:]) for name, flags in (line.split(": ") for line in """
superloss tau=ema: superloss --tau ema
superloss lam=0.25: superloss --lam 0.25
superloss lam=0.1: superloss --lam 0.1
superloss on gce: superloss --base-loss gce
imae T=16: imae --imae-T 16
data-params instance wd 0.01: data-params --dp-instance-weight-decay 0.01
data-params instance lr 10: data-params --dp-instance-lr 10
data-params instance lr 0.1: data-params --dp-instance-lr 0.1
""".strip().splitlines())}
TRACE_METHODS = ["ce", "gce", "superloss", "data-params", "imae"]
GCE_Q = 0.7  # the command line's GCE


def split(name: str, dataset: str, data_dir: str, root: Path) -> str:
    """An npz: 80 % of the training set to train on, the other 20 % held out with its true labels."""
    from curriculoss.harness import data as datasets

    path = root / f"{name}.npz"
    if not path.exists():
        d = datasets.load(dataset, data_dir=data_dir or None)
        order = np.random.default_rng(1234).permutation(len(d.x_train))
        held, fit = order[: len(order) // 5], order[len(order) // 5:]
        y = np.asarray(d.y_train)
        root.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=d.x_train[fit], y=y[fit], x_test=d.x_train[held], y_test=y[held])
    return str(path)


def label_probability(method: str, loss: np.ndarray) -> np.ndarray:
    """p, the probability of the training label, from the recorded per-sample loss of `method`."""
    if method == "gce":
        return np.clip(1.0 - GCE_Q * loss, 0.0, 1.0) ** (1.0 / GCE_Q)
    if method == "imae":
        return 1.0 - loss / 2.0  # MAE = 2 (1 - p)
    return np.exp(-loss)  # cross-entropy (SuperLoss's base loss, data parameters' recorded loss)


def weight(method: str, p: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """Each sample's weight: the factor its method puts on cross-entropy's logit gradient (IMAE: on a
    direction of unit L1 norm); see the module's docstring."""
    return {"gce": lambda: p ** GCE_Q, "superloss": lambda: confidence, "imae": lambda: confidence,
            "data-params": lambda: 1.0 / confidence}.get(method, lambda: np.ones_like(p))()


def trace(folder: Path, method: str) -> list[dict]:
    """Per epoch: held-out accuracy, wrong labels' gradient share and median weights, wrong labels fitted."""
    from curriculoss.signals import open_signals

    s = open_signals(folder)
    wrong = np.asarray(s["noise_mask"]).astype(bool)
    with open(folder / "metrics.csv") as fh:
        history = list(csv.DictReader(fh))
    rows = []
    for epoch, row in enumerate(history):
        p = label_probability(method, np.asarray(s["loss"][epoch], dtype=np.float64))
        conf = np.asarray(s["confidence"][epoch], dtype=np.float64) if method in ("superloss", "imae", "data-params") else None
        w = weight(method, p, conf)
        g = w if method == "imae" else w * 2.0 * (1.0 - p)  # the L1 norm of the sample's logit gradient
        rows.append({"epoch": epoch + 1, "held_out": float(row["test_metric"]),
                     "wrong_share": float(g[wrong].sum() / g.sum()),
                     "weight_wrong": float(np.median(w[wrong])), "weight_right": float(np.median(w[~wrong])),
                     "wrong_fitted": float((p[wrong] > 0.5).mean())})
    return rows


def plot(traces: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = {"held-out accuracy (%)": lambda r: 100 * r["held_out"],
              "median weight, wrong / right labels": lambda r: r["weight_wrong"] / r["weight_right"],
              "gradient carried by wrong labels (%)": lambda r: 100 * r["wrong_share"],
              "wrong labels fitted, p > 0.5 (%)": lambda r: 100 * r["wrong_fitted"]}
    for method, rows in traces.items():
        for ax, value in zip(axes, panels.values()):
            ax.plot([r["epoch"] for r in rows], [value(r) for r in rows], label=method)
    for ax, label in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__)
    grid_arguments(p, out="runs/probe_memorisation", jobs=2, seeds=[100], rates=[0.0, 0.8], methods=METHODS)
    p.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES), metavar="NAME")
    p.add_argument("--figure", help="draw the trace into this PNG")
    args = p.parse_args()
    out = Path(args.out)
    data = grid_data(out, args.mnist, args.only)
    variants = {m: (m, []) for m in args.methods} | {c: CANDIDATES[c] for c in args.candidates}
    jobs, keys = [], []
    for name, (dataset, data_dir, models) in data.items():
        path = split(name, dataset, data_dir, out / "splits")
        for model, (label, (method, flags)), rate, seed in itertools.product(models, variants.items(), args.rates,
                                                                            args.seeds):
            cfg = cli_config("npz", path, model, method, rate, seed, [*flags, *args.extra.split()])
            jobs.append((cfg, out / "runs" / name / model / f"rate{rate:g}" / label.replace(" ", "_") / f"seed{seed}"))
            keys.append({"dataset": name, "model": model, "noise_rate": rate, "variant": label, "method": method,
                         "seed": seed})
    started = Started()
    results = run_all([(cfg, str(folder)) for cfg, folder in jobs], args.jobs)
    rows = [{**k, "best": r["best"], "final": r["final"], "diverged": bool(r.get("diverged"))}
            for k, r in zip(keys, results)]
    print("| data set | model | noise | variant | seed | best | final |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {r['noise_rate']:.0%} | {r['variant']} | {r['seed']} | "
              f"{100 * r['best']:.1f} | {100 * r['final']:.1f} |")
    trace_data = "mnist-3k" if "mnist-3k" in data else next(iter(data))
    traces = {}
    if max(args.rates) > 0:
        rate = max(args.rates)
        for (cfg, folder), k in zip(jobs, keys):
            if (k["dataset"], k["noise_rate"], k["seed"]) == (trace_data, rate, args.seeds[0]) \
                    and k["variant"] in TRACE_METHODS:
                traces[k["variant"]] = trace(folder, k["method"])
        for method, t in traces.items():
            last = t[-1]
            print(f"trace {method}: wrong labels carry {100 * t[0]['wrong_share']:.0f} % of the gradient at epoch 1, "
                  f"{100 * last['wrong_share']:.0f} % at the end; {100 * last['wrong_fitted']:.0f} % fitted")
        if args.figure:
            plot(traces, Path(args.figure), f"{trace_data}, {rate:.0%} symmetric noise, seed {args.seeds[0]}")
    started.write(args.json, "memorisation", {"rows": rows, "trace_dataset": trace_data, "trace": traces,
                                               "candidates": {c: CANDIDATES[c][1] for c in args.candidates}},
                  roles={"--mnist": "MNIST_DIR"})

if __name__ == "__main__":
    sys.exit(main())
