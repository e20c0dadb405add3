"""Does every method train, with the command line's defaults, on every data set? (the defaults grid)

    OMP_NUM_THREADS=1 python benchmarks/bench_defaults.py [--mnist MNIST_DIR] [--out runs/bench_defaults] [--jobs 2]
    OMP_NUM_THREADS=1 python benchmarks/bench_defaults.py --select [...]   # how the defaults were chosen

``MNIST_DIR`` is a folder holding the MNIST IDX files (``train-images-idx3-ubyte`` and the others, plain or
gzipped). ``--json FILE`` writes the grid's figures with the command, the machine and the date (the
documentation's tables are rendered from such files).

Every cell is one ``curriculoss train`` run configured exactly as the command line configures it when
given only ``--dataset/--data-dir/--model/--method/--noise-rate/--seed`` (the script asks the CLI's own
parser for the configuration), so the grid measures the defaults a user gets. Data sets (``_grid.py``):
``digits`` and ``digits-moved`` (MLP and LeNet-5), ``tabular`` (MLP) and, with ``--mnist DIR``,
``mnist-3k`` (LeNet-5) and ``mnist-14px`` (MLP). A finished run folder under ``--out`` is read back.

Noise 0 % and 40 % symmetric (``--noise symmetric pair --rates 0 0.4 0.8`` adds pair noise and 80 %: the grid of
the page that compares the methods); methods ce, mae, gce, sce, focal, imae, superloss, data-params. The table
(``OUT/defaults.md``) gives the final test accuracy per cell, CE's best-minus-final gap, and marks a
cell that collapsed (``diverged`` in its results, or final accuracy at chance) in bold.

``--select`` is how the defaults were chosen, never on a test set: each candidate trains on 80 % of the
training set and is scored on the other 20 % with labels carrying the same 40 % noise (as ``curriculoss
reproduce --tune`` does), seed 100; per model, the learning rate with the best mean final validation
accuracy over every data set and method wins among the candidates with the fewest collapsed runs
(diverged, or final accuracy at chance), and every method is run again at that rate on
``CHECK_SEEDS`` (a collapse there is reported); then the data parameters' instance learning rate, at
that learning rate, by the same rule, where the collapsed runs also count those of a longer-training
check: each candidate trained ``LONG_EPOCHS`` epochs on every data set and model, with clean and with
40 % noisy training labels, on ``CHECK_SEEDS`` (a rate that moves the parameters fast enough to act in
30 epochs can run every instance parameter to the clamp when the learning rate stays high for longer).
Results in ``OUT/selection.md``.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from _grid import cli_config, collapsed, grid_arguments, grid_data, run_all
from _results import Started, parser

METHODS = ["ce", "mae", "gce", "sce", "focal", "imae", "superloss", "data-params"]
RATES = [0.0, 0.4]
LR_CANDIDATES = [0.1, 0.03, 0.01]
DP_INSTANCE_LR_CANDIDATES = [0.1, 1.0, 10.0]
LONG_EPOCHS = 100  # the data parameters' longer-training check (see --select)
CHECK_SEEDS = (100, 101, 102)  # every method at its model's chosen rate, on these seeds too (see --select)


def select(data: dict, out: Path, n_jobs: int, train_flags: list[str], zero_noise: dict[str, list[float]],
           methods: list[str] = METHODS) -> None:
    from curriculoss.harness.reproduce import validation_split

    seed, rate = 100, 0.4
    lines = ["# Selection of the defaults (validation split, 40 % noise, seed 100)", ""]
    splits = {}
    for name, (dataset, data_dir, models) in data.items():
        base = cli_config(dataset, data_dir, models[0], "ce", rate, seed, train_flags)
        splits[name] = str(validation_split(base, out / "select" / name, 0.2))

    def grid(extra_per_model: dict, methods: list[str], variants: list[tuple[str, list[str]]], rate: float = rate,
             only: set[str] | None = None, names: set[str] | None = None, run_seed: int = seed):
        jobs, keys = [], []
        for name, (_, _, models) in data.items():
            if names is not None and name not in names:
                continue
            for model in models:
                if only is not None and model not in only:
                    continue
                for label, extra in variants:
                    for method in methods:
                        cfg = cli_config("npz", splits[name], model, method, rate, run_seed,
                                         [*extra_per_model.get(model, []), *extra, *train_flags])
                        lr = "".join(extra_per_model.get(model, [])[1:])
                        folder = out / "select" / name / model / (f"lr{lr}_{label}" if lr else label) / method
                        if rate != 0.4:
                            folder = out / "select" / f"rate{rate:g}" / name / model / (f"lr{lr}_{label}" if lr else label) / method
                        if run_seed != seed:
                            folder = folder.parent / f"{method}_seed{run_seed}"
                        jobs.append((cfg, str(folder)))
                        keys.append((name, model, label, method))
        return dict(zip(keys, run_all(jobs, n_jobs)))

    t0 = time.perf_counter()
    models = sorted({m for _, _, ms in data.values() for m in ms})
    lr_runs = grid({}, methods, [(f"lr{lr:g}", ["--lr", str(lr)]) for lr in LR_CANDIDATES])
    # 0 % noise as well, for the models and candidates given (a rate fine at 40 % can kill a run at 0 %)
    for model, lrs in zero_noise.items():
        clean = grid({}, methods, [(f"lr{lr:g}", ["--lr", str(lr)]) for lr in lrs], rate=0.0, only={model})
        lines += [f"{model} at 0 % noise (the validation labels keep their 40 % noise):", ""]
        for lr in lrs:
            cells = {k: v for k, v in clean.items() if k[2] == f"lr{lr:g}"}
            bad = [f"{k[3]} on {k[0]}" for k, v in cells.items() if collapsed(v)]
            lines.append(f"- lr {lr:g}: mean final val. acc {100 * np.mean([v['final'] for v in cells.values()]):.2f} %, "
                         f"collapsed: {', '.join(bad) or 'none'}")
            for k, v in cells.items():  # counted with the 40 % runs below
                lr_runs[(k[0], k[1], k[2], k[3] + "@0")] = v
        lines.append("")
        for lr in LR_CANDIDATES:  # candidates not run at 0 % are out
            if lr not in lrs:
                for k in [k for k in lr_runs if k[1] == model and k[2] == f"lr{lr:g}"]:
                    lr_runs[k] = {**lr_runs[k], "final": -1.0}
    chosen_lr = {}
    lines += ["## Learning rate per model (every method, every data set)", "",
              "| model | lr | mean final val. acc (%) | worst cell | collapsed runs | chosen |", "|---|---|---|---|---|---|"]
    for model in models:
        scores = {}
        for lr in LR_CANDIDATES:
            cells = {k: v for k, v in lr_runs.items() if k[1] == model and k[2] == f"lr{lr:g}"}
            finals = [v["final"] for v in cells.values()]
            worst = min(cells, key=lambda k: cells[k]["final"])
            scores[lr] = (float(np.mean(finals)), sum(collapsed(v) for v in cells.values()), worst, cells[worst]["final"])
        chosen_lr[model] = min(LR_CANDIDATES, key=lambda lr: (scores[lr][1], -scores[lr][0]))
        for lr in LR_CANDIDATES:
            mean, bad, worst, wv = scores[lr]
            if model in zero_noise and lr not in zero_noise[model]:
                lines.append(f"| {model} | {lr:g} | not run at 0 % noise: out | | | |")
                continue
            lines.append(f"| {model} | {lr:g} | {100 * mean:.2f} | {worst[3]} on {worst[0]}: {100 * wv:.1f} | {bad} | "
                         f"{'**yes**' if lr == chosen_lr[model] else ''} |")
    # Every method at its model's chosen rate on CHECK_SEEDS (one seed cannot tell a fragile method), at
    # 40 % noise, and at 0 % for the models selected there: a collapse here is reported, not hidden.
    lines += ["", f"## Every method at the chosen rates, seeds {', '.join(map(str, CHECK_SEEDS))}", ""]
    check = {}
    for model in models:
        variant = [(f"lr{chosen_lr[model]:g}", ["--lr", str(chosen_lr[model])])]
        for s in CHECK_SEEDS:
            check.update({(*k, s): v for k, v in grid({}, methods, variant, only={model}, run_seed=s).items()})
            if model in zero_noise:
                check.update({(*k, "@0", s): v for k, v in
                              grid({}, methods, variant, rate=0.0, only={model}, run_seed=s).items()})
    bad = [f"{k[3]} on {k[1]}, {k[0]}{' (0 % noise)' if '@0' in k else ''}, seed {k[-1]}: {100 * v['final']:.1f} %"
           for k, v in check.items() if collapsed(v)]
    lines.append(f"{len(check)} runs, {len(bad)} collapsed" + (": " + "; ".join(bad) if bad else "."))
    per_model = {m: ["--lr", str(chosen_lr[m])] for m in models}
    dp_runs = grid(per_model, ["data-params"], [(f"dpi{v:g}", ["--dp-instance-lr", str(v)]) for v in DP_INSTANCE_LR_CANDIDATES])
    lines += ["", "## Data parameters: instance learning rate (at the chosen learning rates)", "",
              f"| instance lr | mean final val. acc (%) | collapsed runs | {LONG_EPOCHS}-epoch check: mean final val. acc, "
              "clean / 40 % noisy training labels (%) | its worst run (%) | collapsed, all | chosen |",
              "|---|---|---|---|---|---|---|"]
    long_variants = [(f"dpi{v:g}_long", ["--dp-instance-lr", str(v), "--epochs", str(LONG_EPOCHS)])
                     for v in DP_INSTANCE_LR_CANDIDATES]
    long_runs = {}
    for long_rate, s in itertools.product((0.0, rate), CHECK_SEEDS):  # clean labels, and the noisy ones DP is for
        long_runs.update({(*k, long_rate, s): v for k, v in
                          grid(per_model, ["data-params"], long_variants, rate=long_rate, run_seed=s).items()})
    scores = {}
    for v in DP_INSTANCE_LR_CANDIDATES:
        cells = [r for k, r in dp_runs.items() if k[2] == f"dpi{v:g}"]
        long = {k: r for k, r in long_runs.items() if k[2] == f"dpi{v:g}_long"}
        bad = sum(collapsed(c) for c in cells) + sum(collapsed(c) for c in long.values())
        scores[v] = (float(np.mean([c["final"] for c in cells])), sum(collapsed(c) for c in cells), long, bad)
    best = min(DP_INSTANCE_LR_CANDIDATES, key=lambda v: (scores[v][3], -scores[v][0]))
    for v in DP_INSTANCE_LR_CANDIDATES:
        mean, bad, long, total = scores[v]
        by_rate = [100 * np.mean([r["final"] for k, r in long.items() if k[4] == lr]) for lr in (0.0, rate)]
        k = min(long, key=lambda k: long[k]["final"])
        worst = f"{k[1]} {k[0]} {k[4]:.0%} seed {k[5]}: {100 * long[k]['final']:.1f}{' (collapsed)' if collapsed(long[k]) else ''}"
        lines.append(f"| {v:g} | {100 * mean:.2f} | {bad} | {by_rate[0]:.2f} / {by_rate[1]:.2f} | {worst} | {total} | "
                     f"{'**yes**' if v == best else ''} |")
    lines += ["", f"Chosen: lr {chosen_lr}, data-parameter instance lr {best:g} "
              f"({(time.perf_counter() - t0) / 60:.1f} min)."]
    (out / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def noise_cells(noises: list[str], rates: list[float]) -> list[tuple[str, float]]:
    """(noise, rate) of the grid: clean labels once, then every noise kind at every positive rate."""
    return [(noises[0], 0.0)] * (0.0 in rates) + [(n, r) for n in noises for r in rates if r > 0]


def run_folder(out: Path, name: str, model: str, noise: str, rate: float, method: str, seed: int) -> Path:
    kind = "rate" if noise == "symmetric" or rate == 0 else noise
    return out / "grid" / name / model / f"{kind}{rate:g}" / method / f"seed{seed}"


def defaults_grid(data: dict, out: Path, n_jobs: int, seeds: list[int], train_flags: list[str],
                  json_path: str | None = None, methods: list[str] = METHODS, noises: list[str] = ("symmetric",),
                  rates: list[float] = RATES) -> None:
    jobs, keys = [], []
    cells = noise_cells(list(noises), list(rates))
    for name, (dataset, data_dir, models) in data.items():
        for model, (noise, rate), method, seed in itertools.product(models, cells, methods, seeds):
            cfg = cli_config(dataset, data_dir, model, method, rate, seed, ["--noise", noise, *train_flags])
            jobs.append((cfg, str(run_folder(out, name, model, noise, rate, method, seed))))
            keys.append((name, model, noise, rate, method, seed))
    started = Started()
    results = dict(zip(keys, run_all(jobs, n_jobs)))
    wall = time.perf_counter() - started.t_start
    cfg0 = jobs[0][0]
    head = "| data set | model | noise | " + " | ".join(methods) + " | CE best - final |"
    lines = [f"Final test accuracy (%), mean over seeds {seeds}; **bold**: a collapsed run (diverged, or final "
             f"accuracy at chance) in the cell. CLI defaults: epochs {cfg0.epochs}, batch {cfg0.batch_size}, "
             f"momentum {cfg0.momentum}, weight decay {cfg0.weight_decay}, cosine schedule; lr per model as "
             "`curriculoss train` picks it.", "", head, "|" + "---|" * (len(methods) + 4)]
    n_collapsed = 0
    for name, (_, _, models) in data.items():
        for model, (noise, rate) in itertools.product(models, cells):
            row = []
            for method in methods:
                runs = [results[(name, model, noise, rate, method, s)] for s in seeds]
                value = f"{100 * np.mean([r['final'] for r in runs]):.1f}"
                bad = sum(collapsed(r) for r in runs)
                n_collapsed += bad
                row.append(f"**{value} ({bad} collapsed)**" if bad else value)
            ce = [results[(name, model, noise, rate, "ce", s)] for s in seeds if "ce" in methods]
            gap = f"{100 * (np.mean([r['best'] for r in ce]) - np.mean([r['final'] for r in ce])):+.1f}" if ce else ""
            label = f"{rate:.0%}" + (f" {noise}" if rate and len(noises) > 1 else "")
            lines.append(f"| {name} | {model} | {label} | " + " | ".join(row) + f" | {gap} |")
    lines += ["", f"{len(jobs)} runs, {n_collapsed} collapsed; {wall / 60:.1f} min wall with {n_jobs} process(es)."]
    (out / "defaults.md").write_text("\n".join(lines) + "\n")
    (out / "defaults.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1))
    print("\n".join(lines))
    rows = [{"dataset": k[0], "model": k[1], **({"noise": k[2]} if len(noises) > 1 else {}), "noise_rate": k[3],
             "method": k[4], "seed": k[5], "best": r["best"], "final": r["final"],
             **({"selected": r["selected"]} if "selected" in r else {}),
             "diverged": bool(r.get("diverged")), "collapsed": collapsed(r)}
            for k, r in results.items()]
    started.write(json_path, "defaults-grid", {
        "epochs": cfg0.epochs, "batch_size": cfg0.batch_size, "momentum": cfg0.momentum,
        "weight_decay": cfg0.weight_decay, "lr": {m: cli_config("digits", "", m, "ce", 0.0, 0, train_flags).lr
                                                  for m in sorted({k[1] for k in keys})},
        "methods": methods, **({"noise": list(noises)} if len(noises) > 1 else {}),
        "noise_rates": list(rates), "seeds": seeds, "processes": n_jobs, "rows": rows},
        roles={"--mnist": "MNIST_DIR"})


def main() -> None:
    p = parser(__doc__, json_help="also write the grid's figures, command, machine and date to this file")
    grid_arguments(p, out="runs/bench_defaults", jobs=1, seeds=[0], rates=RATES, methods=METHODS)
    p.add_argument("--noise", nargs="+", default=["symmetric"], choices=["symmetric", "pair"],
                   help="label-noise kinds of the grid (default symmetric)")
    p.add_argument("--epochs", type=int, help="override the CLI's default epochs (for a quick look only)")
    p.add_argument("--select", action="store_true", help="run the selection of the defaults instead of the grid")
    p.add_argument("--select-clean", nargs="+", default=["lenet:0.1,0.03,0.01"], metavar="MODEL:LR,LR",
                   help="also select at 0 %% noise for these models and learning rates (default lenet:0.1,0.03,0.01)")
    args = p.parse_args()
    out = Path(args.out)
    data = grid_data(out, args.mnist, args.only)
    train_flags = (["--epochs", str(args.epochs)] if args.epochs else []) + args.extra.split()
    if args.select:
        zero = {m: [float(v) for v in lrs.split(",")] for m, lrs in (x.split(":") for x in args.select_clean)}
        select(data, out, args.jobs, train_flags, zero, args.methods)
    else:
        defaults_grid(data, out, args.jobs, args.seeds, train_flags, args.json, args.methods, args.noise, args.rates)


if __name__ == "__main__":
    sys.exit(main())
