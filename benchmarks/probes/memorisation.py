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

Two more measurements: IMAE with its temperature changed during the run (``T_SCHEDULES``: the paper
fixes T per data set, 8 on noisy data and 0.5 on clean), set each epoch on the run's IMAE; and the share of
wrong labels that ``curriculoss flag``'s default score estimates from each CE run (``estimates``), to see
whether a run could tell clean hard data from heavy noise by itself.
"""
from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared grid runner
from _grid import cli_config, grid_arguments, grid_data, run_all, run_one  # noqa: E402
from _results import Started, parser  # noqa: E402

METHODS = ["ce", "gce", "sce", "superloss", "data-params", "imae"]
#: name -> (method, the flags it adds to the defaults), from a table of "name: method flags..."
CANDIDATES = {name: (flags.split()[0], flags.split()[1:]) for name, flags in (line.split(": ") for line in """
superloss tau=ema: superloss --tau ema
superloss lam=0.25: superloss --lam 0.25
superloss lam=0.1: superloss --lam 0.1
superloss on gce: superloss --base-loss gce
imae T=16: imae --imae-T 16
imae T=0.5: imae --imae-T 0.5
data-params instance wd 0.01: data-params --dp-instance-weight-decay 0.01
data-params instance lr 10: data-params --dp-instance-lr 10
data-params instance lr 0.1: data-params --dp-instance-lr 0.1
data-params instance lr 100: data-params --dp-instance-lr 100
data-params joint: data-params --dp-level joint
""".strip().splitlines())}
#: name -> IMAE's temperature at each epoch (counted from 0) of the command line's 30-epoch run
T_SCHEDULES = {
    "imae T 8, 16 from epoch 11": lambda epoch: 8.0 if epoch < 10 else 16.0,
    "imae T 8 to 16 over epochs 16-30": lambda epoch: 8.0 + 8.0 * min(1.0, max(0.0, (epoch - 15) / 15)),
}
TRACE_METHODS = ["ce", "gce", "superloss", "data-params", "imae"]
GCE_Q = 0.7  # the command line's GCE


def split(name: str, dataset: str, data_dir: str, root: Path) -> str:
    """An npz: 80 % of the training set to train on, the other 20 % held out with its true labels."""
    from curriculoss.harness import data as datasets
    from curriculoss.harness.holdout import split_positions

    path = root / f"{name}.npz"
    if not path.exists():
        d = datasets.load(dataset, data_dir=data_dir or None)
        fit, held = split_positions(len(d.x_train), 0.2, 1234)
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


def run_scheduled(job: tuple) -> dict:
    """One run ``(cfg, folder, schedule)``; with a schedule (a name of ``T_SCHEDULES``), the run's IMAE
    takes that epoch's temperature at the start of every epoch."""
    cfg, folder, schedule = job
    if schedule is None:
        return run_one((cfg, folder))
    from curriculoss.harness.methods import IMAEMethod, Method
    from curriculoss.imae import imae

    epochs = itertools.count()

    def start_epoch(method) -> None:
        Method.start_epoch(method)
        method.T = T_SCHEDULES[schedule](next(epochs))
        method.base = lambda z, y: imae(z, y, T=method.T, reduction="none")

    with mock.patch.object(IMAEMethod, "start_epoch", start_epoch):
        return run_one((cfg, folder))


def probe_jobs(args, data: dict, out: Path) -> tuple[list[tuple], list[dict]]:
    """The runs: ``(cfg, folder, schedule)`` each, and what each one is."""
    variants = ({m: (m, [], None) for m in args.methods} | {c: (*CANDIDATES[c], None) for c in args.candidates}
                | {s: ("imae", [], s) for s in args.schedules})
    jobs, keys = [], []
    for name, (dataset, data_dir, models) in data.items():
        path = split(name, dataset, data_dir, out / "splits")
        for model, (label, (method, flags, schedule)), rate, seed in itertools.product(
                models, variants.items(), args.rates, args.seeds):
            cfg = cli_config("npz", path, model, method, rate, seed, [*flags, *args.extra.split()])
            variant = label.replace(" ", "_").replace(",", "")
            folder = out / "runs" / name / model / f"rate{rate:g}" / variant / f"seed{seed}"
            jobs.append((cfg, str(folder), schedule))
            keys.append({"dataset": name, "model": model, "noise_rate": rate, "variant": label, "method": method,
                         "seed": seed})
    return jobs, keys


def noise_estimates(jobs: list[tuple], keys: list[dict]) -> list[dict]:
    """Per CE run: the share of its labels that flag's default score estimates wrong, and the true share."""
    from curriculoss import flag
    from curriculoss.signals import open_signals

    rows = []
    for (_, folder, _), k in zip(jobs, keys):
        if k["variant"] == "ce":
            signals = open_signals(folder)
            score, scores = flag.run_scores(signals, method="ce")
            wrong = np.asarray(signals["noise_mask"]).mean() if "noise_mask" in signals else 0.0
            rows.append({x: k[x] for x in ("dataset", "model", "noise_rate", "seed")}
                        | {"estimated": flag.estimate_num_issues(scores, score=score) / len(scores),
                           "wrong": float(wrong)})
    return rows


def traces_of(jobs: list[tuple], keys: list[dict], trace_data: str, rate: float, seed: int) -> dict:
    """The trace of each method of ``TRACE_METHODS`` on ``trace_data`` at ``rate``, first seed."""
    traces = {}
    for (_, folder, _), k in zip(jobs, keys):
        if (k["dataset"], k["noise_rate"], k["seed"]) == (trace_data, rate, seed) and k["variant"] in TRACE_METHODS:
            traces[k["variant"]] = trace(Path(folder), k["method"])
    for method, t in traces.items():
        print(f"trace {method}: wrong labels carry {100 * t[0]['wrong_share']:.0f} % of the gradient at epoch 1, "
              f"{100 * t[-1]['wrong_share']:.0f} % at the end; {100 * t[-1]['wrong_fitted']:.0f} % fitted")
    return traces


def main() -> None:
    p = parser(__doc__)
    grid_arguments(p, out="runs/probe_memorisation", jobs=2, seeds=[100], rates=[0.0, 0.8], methods=METHODS)
    p.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES), metavar="NAME")
    p.add_argument("--schedules", nargs="*", default=list(T_SCHEDULES), choices=list(T_SCHEDULES), metavar="NAME")
    p.add_argument("--figure", help="draw the trace into this PNG")
    args = p.parse_args()
    out = Path(args.out)
    data = grid_data(out, args.mnist, args.only)
    jobs, keys = probe_jobs(args, data, out)
    started = Started()
    results = run_all(jobs, args.jobs, run_scheduled)
    rows = [{**k, "best": r["best"], "final": r["final"], "diverged": bool(r.get("diverged"))}
            for k, r in zip(keys, results)]
    print("| data set | model | noise | variant | seed | best | final |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {r['noise_rate']:.0%} | {r['variant']} | {r['seed']} | "
              f"{100 * r['best']:.1f} | {100 * r['final']:.1f} |")
    trace_data = "mnist-3k" if "mnist-3k" in data else next(iter(data))
    traces = traces_of(jobs, keys, trace_data, max(args.rates), args.seeds[0]) if max(args.rates) > 0 else {}
    if args.figure and traces:
        plot(traces, Path(args.figure), f"{trace_data}, {max(args.rates):.0%} symmetric noise, seed {args.seeds[0]}")
    started.write(args.json, "memorisation", {"rows": rows, "trace_dataset": trace_data, "trace": traces,
                                               "candidates": {c: CANDIDATES[c][1] for c in args.candidates},
                                               "schedules": list(args.schedules),
                                               "estimates": noise_estimates(jobs, keys)},
                  roles={"--mnist": "MNIST_DIR"})


if __name__ == "__main__":
    sys.exit(main())
