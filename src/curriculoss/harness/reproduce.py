"""Reproduce the papers' claims at reduced scale: one preset per claim, one command per preset.

`curriculoss reproduce NAME [--quick] [--data-dir DIR] [--out DIR]` trains every variant of a preset
over its noise rates and 3 seeds (cells are run folders, resumable and never recomputed), then writes
`report.md` (the claim, the table, the command, the wall time and a verdict computed from the
numbers by a rule stated in the report) and `plot.png` into `OUT/NAME`.

Data: the embedded scikit-learn digits (default, MLP) or MNIST given with `--data-dir` (IDX files,
LeNet-5, a training subset).

Hyper-parameters (learning rates, lam, T, data-parameter rates) are selected by
`curriculoss reproduce NAME --tune`, never on the test set: a validation split (20 %) is carved from
the training set, it carries the same kind and rate of label noise as the training labels (a clean
validation set is what a user with noisy labels does not have), every candidate is trained on the
rest with its own seeds (not the reproduction's), and the candidate with the best mean *final*
validation figure wins. The baselines get the same treatment as the methods. The selections ship in
`reproduce_hparams.json` (one entry per data set) and each report prints the values it used.
Epochs, batch size, model and subset size are fixed by the time budget, not tuned.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from curriculoss.harness import plots
from curriculoss.harness.holdout import split_positions
from curriculoss.harness.methods import MethodOptions
from curriculoss.harness.presets import PRESETS, Preset
from curriculoss.harness.train import TrainConfig, prepare_data, train, train_or_reuse
from curriculoss.signals import open_signals

__all__ = ["PRESETS", "Preset", "run_preset", "tune_preset", "load_hparams", "save_hparams", "validation_split",
           "variant_config"]

SEEDS = (0, 1, 2)
TUNE_SEEDS = (100, 101)  # disjoint from the reproduction's seeds
VAL_FRACTION = 0.2
HPARAMS_FILE = Path(__file__).with_name("reproduce_hparams.json")
_TRAIN_FIELDS = ("lr", "weight_decay", "momentum")  # TrainConfig fields a selection may set; others are MethodOptions


# ------------------------------------------------------------------------------------------ running

def tune_folder(out: str | Path | None, name: str, quick: bool) -> Path:
    """Where `--tune` puts a preset's selection runs and its `tuning.md`."""
    return Path(out or "runs/reproduce") / "tune" / (name + ("-quick" if quick else ""))


def dataset_key(data_dir: str | None) -> str:
    """The data set a preset trains on, which keys its selections: MNIST's IDX files or digits."""
    return "idx" if data_dir else "digits"


def _base_config(data_dir: str | None, preset: Preset, quick: bool) -> TrainConfig:
    if data_dir:
        # LeNet-5 with PyTorch's default initialisation: the network docs/mnist/reproduction.md was
        # recorded with (the command line's lenet is He-initialised since).
        cfg = TrainConfig(dataset="idx", data_dir=data_dir, model="lenet-torchinit", limit=10_000, epochs=15,
                          batch_size=128)
    else:
        cfg = TrainConfig(dataset="digits", model="mlp", epochs=30, batch_size=64)
    cfg = replace(cfg, **preset.base)
    if quick:
        cfg = replace(cfg, epochs=preset.quick.get("epochs", cfg.epochs),
                      limit=min(cfg.limit, 3000) if cfg.limit else cfg.limit)
    return cfg


def load_hparams(path: str | Path | None = None) -> dict:
    """The selected hyper-parameters, `{dataset: {preset: {variant: {name: value}}}}`; `{}` if none.

    `path`: a file written by `curriculoss reproduce NAME --tune`; default: the selections shipped
    with the package.
    """
    path = Path(path) if path is not None else HPARAMS_FILE
    if not path.exists():
        if path == HPARAMS_FILE:
            return {}
        raise FileNotFoundError(f"hparams file {str(path)!r} not found (expected the JSON written by --tune)")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"hparams file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ValueError(f"hparams file {str(path)!r} must hold a JSON object keyed by data set")
    return table


def _chosen(hparams: dict, dataset: str, name: str, label: str) -> dict:
    """The selected values for one variant (a borrowed variant takes another preset's), or `{}`."""
    source = PRESETS[name].borrow.get(label, (name, label))
    entry = hparams
    for key in (dataset, *source):
        entry = entry.get(key, {}) if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            raise ValueError(f"hparams: the entry {dataset}/{'/'.join(source)} must be a JSON object of "
                             f"hyper-parameter values")
    return dict(entry)


def _variant_config(cfg: TrainConfig, change: dict, params: dict) -> TrainConfig:
    """`cfg` with a variant's changes, then its selected hyper-parameters, applied."""
    known = set(_TRAIN_FIELDS) | {f.name for f in fields(MethodOptions)}
    for key, value in params.items():
        if key not in known:
            raise ValueError(f"hparams: unknown hyper-parameter {key!r} (expected one of {', '.join(sorted(known))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"hparams: {key} must be a number; got {value!r}")
    change = {k: v for k, v in change.items() if k != "oracle"}
    cfg = replace(cfg, **change)
    top = {k: v for k, v in params.items() if k in _TRAIN_FIELDS}
    opts = {k: v for k, v in params.items() if k not in _TRAIN_FIELDS}
    return replace(cfg, **top, options=replace(cfg.options, **opts))


def variant_config(name: str, label: str, *, data_dir: str | None = None, quick: bool = False,
                   hparams: dict | None = None, **changes) -> TrainConfig:
    """The configuration that variant `label` of preset `name` trains with: the preset's base with
    `changes` (e.g. `noise_rate=0.4, seed=0`), then the variant's own changes and its selected
    hyper-parameters (`hparams` as `load_hparams` returns; default: the shipped selections)."""
    if name not in PRESETS or label not in PRESETS[name].variants:
        raise ValueError(f"no variant {label!r} in preset {name!r}")
    preset = PRESETS[name]
    base = replace(_base_config(data_dir, preset, quick), **changes)
    table = hparams if hparams is not None else load_hparams()
    return _variant_config(base, preset.variants[label], _chosen(table, base.dataset, name, label))


def _describe(params: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in params.items()) or "defaults"


def validation_split(cfg: TrainConfig, folder: Path, fraction: float) -> Path:
    """An npz whose training part is (1 - fraction) of the training set, with its true labels (the
    harness adds the noise), and whose test part is the remaining fraction with *noisy* labels: noise
    of the configuration's kind and rate, drawn with its seed. The test set is never used."""
    data, noisy = prepare_data(cfg, stream=False)  # written to an .npz: the arrays
    fit, val = split_positions(len(data.x_train), fraction, cfg.seed, name="validation fraction")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "validation_split.npz"
    np.savez(path, x=data.x_train[fit], y=np.asarray(data.y_train)[fit],
             x_test=data.x_train[val], y_test=np.asarray(noisy.labels)[val], train_index=fit, val_index=val)
    return path


def tune_preset(name: str, *, data_dir: str | None = None, quick: bool = False, out: str | Path | None = None,
                seeds: tuple[int, ...] = TUNE_SEEDS, fraction: float = VAL_FRACTION, progress: bool = True,
                overrides: dict | None = None) -> tuple[Path | None, dict]:
    """Select the preset's hyper-parameters on a validation split of the training set.

    Every variant's candidates (`preset.tune`) are trained at `preset.tune_rate` noise, once per
    seed, on the training part; the candidate with the best mean final validation figure (accuracy
    against the noisy validation labels, or MAE against the noisy validation targets) wins; a diverged
    candidate (NaN) never wins; ties go to the earlier candidate. Returns the path of `tuning.md` and
    `{variant: {name: value}}` (`(None, {})` for a preset that borrows its values).
    """
    from tqdm.auto import tqdm

    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    preset = PRESETS[name]
    if not preset.tune:
        return None, {}
    base = replace(_base_config(data_dir, preset, quick), **(overrides or {}))
    regression = base.task == "regression"
    folder = tune_folder(out, name, quick)
    splits = {seed: validation_split(replace(base, noise_rate=preset.tune_rate, seed=seed), folder / f"split{seed}",
                                      fraction) for seed in seeds}
    chosen: dict[str, dict] = {}
    rows: list[tuple[str, dict, list[float]]] = []
    t0 = time.perf_counter()
    jobs = sum(math.prod(len(v) for k, v in grid.items() if k != "from") for grid in preset.tune.values()) * len(seeds)
    bar = tqdm(total=jobs, desc=f"tune {name}", disable=not progress, dynamic_ncols=True)
    for label, grid in preset.tune.items():
        grid = dict(grid)
        start = dict(chosen[grid.pop("from")]) if "from" in grid else {}
        best: tuple[float, dict] | None = None
        for values in itertools.product(*grid.values()):
            params = {**start, **dict(zip(grid, values))}
            scores = []
            for seed, split in splits.items():
                cfg = replace(base, dataset="npz", data_dir=str(split), limit=None, noise_rate=preset.tune_rate, seed=seed)
                cfg = _variant_config(cfg, preset.variants[label], params)
                run = folder / label.replace(" ", "_").replace("=", "") / \
                    "_".join(f"{k}{v:g}" for k, v in params.items()) / f"seed{seed}"
                results = train_or_reuse(cfg, run, stamp="config.json", trainer=train, progress=False)
                scores.append(float(results["final"]))
                bar.update()
            rows.append((label, params, scores))
            score = float(np.mean(scores))
            if math.isfinite(score) and (best is None or (score < best[0] if regression else score > best[0])):
                best = (score, params)
        chosen[label] = best[1] if best is not None else {**start, **{k: v[0] for k, v in grid.items()}}
    bar.close()
    wall = time.perf_counter() - t0
    return _tuning_report(name, preset, base, seeds, fraction, rows, chosen, folder, quick, data_dir, wall), chosen


def _tuning_report(name, preset, base, seeds, fraction, rows, chosen, folder: Path, quick, data_dir, wall) -> Path:
    regression = base.task == "regression"
    unit = "validation MAE (noisy targets)" if regression else "validation accuracy (%, noisy labels)"
    scale = 1.0 if regression else 100.0
    command = f"curriculoss reproduce {name} --tune" + (" --quick" if quick else "") + \
        (f" --data-dir {data_dir}" if data_dir else "")
    lines = [f"### {name}", "",
             f"Noise {preset.tune_rate:.0%} ({'uniform replacement' if regression else base.noise}), {fraction:.0%} of the {base.dataset} training set held "
             f"out with noisy labels, {base.epochs} epochs, seeds {list(seeds)}; the best mean final figure wins. "
             f"`{command}` ({wall / 60:.1f} min).", "",
             f"| variant | candidate | final {unit} | chosen |", "|---|---|---|---|"]
    for label, params, scores in rows:
        mark = "**yes**" if chosen[label] == params else ""
        lines.append(f"| {label} | {_describe(params)} | {_fmt(scores, scale)} | {mark} |")
    text = "\n".join(lines) + "\n"
    (folder / "tuning.md").write_text(text)
    (folder / "chosen.json").write_text(json.dumps(chosen, indent=1))
    return folder / "tuning.md"


def save_hparams(path: str | Path, dataset: str, name: str, chosen: dict) -> None:
    """Merge one preset's selections into the hyper-parameter file `path` (created if missing)."""
    path = Path(path)
    table = load_hparams(path) if path.exists() else {}
    table.setdefault(dataset, {})[name] = chosen
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def _oracle_config(cfg: TrainConfig, folder: Path) -> TrainConfig:
    """CE on the clean subset: the training samples whose label the noise left unchanged, as an npz."""
    data, noisy = prepare_data(cfg, stream=False)  # written to an .npz: the arrays
    keep = ~np.asarray(noisy.mask)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clean_subset.npz"
    np.savez(path, x=data.x_train[keep], y=np.asarray(data.y_train)[keep], x_test=data.x_test, y_test=data.y_test)
    return replace(cfg, dataset="npz", data_dir=str(path), limit=None, noise_rate=0.0)


def _extras(folder: Path, label: str) -> dict:
    """Per-run figures beyond results.json: final training accuracies, top-40 % share, confidences."""
    import csv

    out: dict = {}
    with open(folder / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    out["train_acc_noisy"] = float(rows[-1]["train_acc_noisy"])
    out["train_acc_true"] = float(rows[-1]["train_acc_true"])
    out["train_acc_curve"] = [float(r["train_acc_noisy"]) for r in rows]
    signals = {key: np.asarray(value) for key, value in open_signals(folder).items()}
    mask = signals["noise_mask"].astype(bool)
    if label.startswith("data-params") and mask.any():
        sigma = signals["confidence"][-1]
        top = np.argsort(-sigma, kind="stable")[: int(round(0.4 * len(sigma)))]
        out["corrupt_in_top40"] = float(np.isin(np.flatnonzero(mask), top).mean())
    if label == "superloss" and mask.any():
        from curriculoss.harness.plots import sample_groups

        groups = sample_groups(signals["loss"], mask)
        conf = signals["confidence"]
        half = conf[conf.shape[0] // 2:]
        for name, sel in groups.items():
            out[f"conf_{name}"] = float(np.nanmedian(half[:, sel])) if sel.any() else float("nan")
            out[f"conf_curve_{name}"] = [float(np.nanmedian(row[sel])) if sel.any() else float("nan") for row in conf]
    return out


def run_preset(name: str, *, data_dir: str | None = None, quick: bool = False, out: str | Path | None = None,
               seeds: tuple[int, ...] = SEEDS, progress: bool = True, overrides: dict | None = None,
               hparams: str | Path | dict | None = None) -> Path:
    """Train the preset's cells (skipping finished ones) and write its report; returns the report path.

    `overrides`: changes to the base configuration (e.g. `{'epochs': 1, 'limit': 200}` in tests).
    `hparams`: the selected hyper-parameters (a dict as `load_hparams` returns, or its file);
    default: the shipped selections. Variants without a selection for the data set keep the papers'
    values and the harness defaults, and the report says so.
    """
    from tqdm.auto import tqdm

    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    preset = PRESETS[name]
    out = Path(out or "runs/reproduce") / (name + ("-quick" if quick else ""))
    base = replace(_base_config(data_dir, preset, quick), **(overrides or {}))
    rates = preset.quick.get("rates", preset.rates) if quick else preset.rates
    prepare_data(replace(base, noise_rate=max(rates)))  # bad data fails before anything is written
    table = hparams if isinstance(hparams, dict) else load_hparams(hparams)
    params = {label: _chosen(table, base.dataset, name, label) for label in preset.variants}
    for label, change in preset.variants.items():
        _variant_config(base, change, params[label])  # a bad selection fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, float], list[dict]] = {}
    t0 = time.perf_counter()
    jobs = [(label, rate, seed) for rate in rates for label in preset.variants for seed in seeds]
    for label, rate, seed in tqdm(jobs, desc=name, disable=not progress, dynamic_ncols=True):
        oracle = preset.variants[label].get("oracle", False)
        cfg = _variant_config(replace(base, noise_rate=rate, seed=seed), preset.variants[label], params[label])
        folder = out / label.replace(" ", "_").replace("=", "") / f"rate{rate:g}" / f"seed{seed}"
        if oracle:
            cfg = _oracle_config(cfg, folder)
        results = train_or_reuse(cfg, folder, stamp="config.json", trainer=train,
                                 progress=progress, position=1)
        cells.setdefault((label, rate), []).append({**results, **_extras(folder, label)})
    wall = time.perf_counter() - t0
    return _report(name, preset, base, rates, seeds, cells, out, quick, data_dir, wall, params)


def _fmt(values: list[float], scale: float) -> str:
    a = scale * np.asarray(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std():.2f}"


def _ce_gaps(cells: dict, scale: float, regression: bool) -> str:
    """CE's best-minus-final test figure per noise rate: how much plain CE memorised the noisy labels."""
    label = next((lab for lab, _ in cells if lab.split()[0] in ("ce", "l2")), None)
    if label is None:
        return ""
    sign = -1.0 if regression else 1.0
    parts = [f"{rate:.0%} {sign * scale * (np.mean([r['best'] for r in runs]) - np.mean([r['final'] for r in runs])):+.2f}"
             for (lab, rate), runs in cells.items() if lab == label]
    return f"{label} best minus final (mean over seeds; memorisation of the noisy labels): " + ", ".join(parts)


def _report(name, preset, base, rates, seeds, cells, out: Path, quick, data_dir, wall, params) -> Path:
    regression = base.task == "regression"
    scale, unit = (1.0, "test MAE") if regression else (100.0, "test accuracy (%)")
    head = f"| variant | noise | best {unit} | final {unit} | diverged |"
    sep = "|---|---|---|---|---|"
    extra_cols = []
    if not regression:
        extra_cols = ["train acc, noisy labels (%)", "train acc, true labels (%)"]
    extra_cols += [header for header, _, _ in preset.columns]
    if extra_cols:
        head += "".join(f" {c} |" for c in extra_cols)
        sep += "---|" * len(extra_cols)
    lines = [head, sep]
    for (label, rate), runs in cells.items():
        row = f"| {label} | {rate:.0%} | {_fmt([r['best'] for r in runs], scale)} | {_fmt([r['final'] for r in runs], scale)} |"
        diverged = sum(bool(r.get("diverged", False)) for r in runs)  # collapsed runs stay in the means, counted
        row += f" **{diverged}/{len(runs)}** |" if diverged else f" 0/{len(runs)} |"
        if not regression:
            row += f" {_fmt([r['train_acc_noisy'] for r in runs], 100)} | {_fmt([r['train_acc_true'] for r in runs], 100)} |"
        for _, key, factor in preset.columns:
            row += f" {_fmt([r[key] for r in runs], factor)} |" if key in runs[0] else " |"
        lines.append(row)
    if preset.notes is not None:
        lines += preset.notes(preset, cells)
    gaps = _ce_gaps(cells, scale, regression)
    if gaps:
        lines += ["", gaps]
    verdict, rule = preset.verdict(cells) if preset.verdict else ("not judged", "")
    train_s = sum(c.get("seconds", 0.0) for runs in cells.values() for c in runs)
    n_runs = sum(len(runs) for runs in cells.values())
    command = f"curriculoss reproduce {name}" + (" --quick" if quick else "") + (f" --data-dir {data_dir}" if data_dir else "")
    data = f"{base.dataset}" + (f" ({data_dir}, first {base.limit} training samples)" if data_dir else " (scikit-learn, 1437 training / 360 test)")
    text = "\n".join([
        f"## {name}", "",
        f"**Claim.** {preset.claim}", "",
        f"**Paper.** {preset.paper}", "",
        f"**The paper's numbers.** {preset.numbers}", "",
        f"**Here.** {data}, model {base.model}, {base.epochs} epochs, batch {base.batch_size}, SGD with cosine "
        f"decay (default lr {base.lr}), seeds {list(seeds)}; mean ± std over seeds.", "",
        "**Hyper-parameters.** " + "; ".join(f"{label}: {_describe(p)}" for label, p in params.items()) +
        (" (selected on a validation split of the training set, see *Hyper-parameter selection*"
         + (f"; borrowed as {', '.join(f'{v} from {p}/{w}' for v, (p, w) in preset.borrow.items())}" if preset.borrow else "")
         + ")" if any(params.values()) else " (no selection for this data set: the papers' values and the "
         "harness defaults)") + ".", "",
        f"**Command.** `{command}` (training time {train_s / 60:.1f} min, summed over its {n_runs} runs on this "
        f"machine; this invocation {wall / 60:.1f} min, finished cells being reused)", "",
        *lines, "",
        f"![{name}](plot.png)", "",
        f"**Verdict: {verdict}.** {rule}", "",
    ])
    (out / "report.md").write_text(text)
    (out / "cells.json").write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in cells.items()}, indent=1))
    plots.save_figure(out / "plot.png", _plot, preset, cells, rates, regression)
    return out / "report.md"


def _plot(preset: Preset, cells: dict, rates, regression: bool):
    """The report's figure: the preset's own plot, else the final test figure per variant against the
    noise rate (bars at a single rate)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    scale = 1 if regression else 100
    if preset.plot is not None:
        preset.plot(ax, preset, cells, rates)
    elif len(rates) == 1:
        labels = list(preset.variants)
        vals = [np.mean([r["final"] for r in cells[(lab, rates[0])]]) * scale for lab in labels]
        errs = [np.std([r["final"] for r in cells[(lab, rates[0])]]) * scale for lab in labels]
        ax.bar(range(len(labels)), vals, yerr=errs)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set(ylabel="final test " + ("MAE" if regression else "accuracy (%)"), title=f"noise {rates[0]:.0%}")
    else:
        for label in preset.variants:
            x = [100 * r for r in rates]
            y = np.array([np.mean([c["final"] for c in cells[(label, r)]]) for r in rates]) * scale
            e = np.array([np.std([c["final"] for c in cells[(label, r)]]) for r in rates]) * scale
            ax.errorbar(x, y, yerr=e, marker="o", capsize=2, label=label)
        ax.set(xlabel="label noise (%)", ylabel="final test " + ("MAE" if regression else "accuracy (%)"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def assemble(reports: list[Path], path: Path, tuning: list[Path] = ()) -> None:
    """`docs/reproduction.md` from the presets' reports and the tuning reports (numbers copied by
    the program, not by hand). A hand-written reading of a verdict, `<stem>-notes/NAME.md` beside
    `path` (e.g. `docs/reproduction-notes/imae-table2.md`), is put under that preset's verdict."""
    notes = path.with_name(path.stem + "-notes")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["# Reproducing the papers' claims", "",
             "Generated by `curriculoss reproduce all` from the runs it made; every number below comes "
             "from those runs, and each verdict from the rule stated beside it. Scale is reduced (see each "
             "section). Each section lists the hyper-parameters its variants used. They were selected by "
             "`curriculoss reproduce all --tune` on a validation split carved from the training set "
             "(20 %, with noisy labels, other seeds), never on the test set; see *Hyper-parameter "
             "selection* at the end. Not tuned: epochs, batch size, model and subset (fixed by the time "
             "budget), momentum 0.9, weight decay 5e-4, the data-parameter class rate (the reference "
             "implementation's) and SuperLoss's smoothing.", ""]
    parts += ["| claim | verdict |", "|---|---|"]
    for report in reports:
        found = re.search(r"\*\*Verdict: ([^.]+)\.\*\*", report.read_text())
        claim = report.parent.name.removesuffix("-quick")
        parts.append(f"| [{report.parent.name}](#{claim}) | {found.group(1) if found else 'not judged'} |")
    parts.append("")
    for report in reports:
        text = report.read_text()
        name = report.parent.name
        png = report.parent / "plot.png"
        if png.exists():
            target = path.parent / "reproduction" / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png.read_bytes())
        parts.append(text.replace("](plot.png)", f"](reproduction/{name}.png)"))
        if (notes / f"{name}.md").exists():
            parts += ["**Likely reasons** (written by hand after reading the figures above):", "",
                      (notes / f"{name}.md").read_text().strip(), ""]
    if tuning:
        parts += ["## Hyper-parameter selection", "",
                  "Each candidate trained on 80 % of the training set and scored on the other 20 %, whose "
                  "labels carry the same noise; mean ± std over the tuning seeds. The presets without a "
                  "table borrow selections, as their sections say.", ""]
        parts += [t.read_text() for t in tuning]
    path.write_text("\n".join(parts))
