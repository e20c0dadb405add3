"""Reproduce the papers' claims at reduced scale: one preset per claim, one command per preset.

``curriculoss reproduce NAME [--quick] [--data-dir DIR] [--out DIR]`` trains every variant of a preset
over its noise rates and 3 seeds (cells are run folders, resumable and never recomputed), then writes
``report.md`` (the claim, the table, the command, the wall time and a verdict computed from the
numbers by a rule stated in the report) and ``plot.png`` into ``OUT/NAME``.

Data: the embedded scikit-learn digits (default, MLP) or MNIST given with ``--data-dir`` (IDX files,
LeNet-5, a training subset). Settings are the papers' own (lam = 1, T = 8, data-parameter learning
rates of the reference implementation); none was tuned, and none was chosen on the test set. The
verdict rules compare test figures between methods, as the papers do; the only tuning-free choice
here is the reduced scale (model, epochs, subset), stated in each report.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from curriculoss.methods import MethodOptions
from curriculoss.train import TrainConfig, prepare_data, train

__all__ = ["PRESETS", "Preset", "run_preset"]

SEEDS = (0, 1, 2)


@dataclass
class Preset:
    """One claim: variants (label -> changes to the base configuration) x noise rates x seeds."""

    claim: str
    paper: str
    variants: dict[str, dict]
    rates: tuple[float, ...]
    base: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)  # changes for --quick: 'rates', 'epochs', 'limit'
    verdict: Callable[[dict], tuple[str, str]] | None = None  # cells -> (verdict, rule and figures)


def _opts(**kw) -> MethodOptions:
    return MethodOptions(**kw)


def _mean(cells: dict, label: str, rate: float, key: str) -> float:
    return float(np.mean([c[key] for c in cells[(label, rate)]]))


# ------------------------------------------------------------------------------------------ verdicts

def _verdict_better(baselines: list[str], ours: list[str], rates_from: float, key: str, lower_is_better: bool,
                    own_base: dict[str, str] | None = None):
    """Each variant of ``ours`` against the best of ``baselines`` (or against its own base loss,
    ``own_base[variant]``, when given) at every noise rate >= ``rates_from``."""
    def reference(cells: dict, variant: str, rate: float) -> tuple[str, float]:
        if own_base is not None:
            return own_base[variant], _mean(cells, own_base[variant], rate, key)
        base = [_mean(cells, b, rate, key) for b in baselines if (b, rate) in cells]
        return "best baseline", min(base) if lower_is_better else max(base)

    def rule(cells: dict) -> tuple[str, str]:
        rates = sorted({r for (_, r) in cells if r >= rates_from})
        wins, total, lines = 0, 0, []
        for r in rates:
            for o in ours:
                if (o, r) not in cells:
                    continue
                against, ref = reference(cells, o, r)
                v = _mean(cells, o, r, key)
                ok = v < ref if lower_is_better else v > ref
                wins += ok
                total += 1
                lines.append(f"{o} at {r:.0%}: {v:.4f} vs {against} {ref:.4f} ({'better' if ok else 'not better'})")
        verdict = "reproduced" if wins == total else "partly reproduced" if wins > 0 else "not reproduced"
        versus = "its own base loss" if own_base is not None else f"the best of {baselines}"
        rule_text = (f"rule: every variant in {ours} beats {versus} on mean {key} "
                     f"at each noise rate >= {rates_from:.0%} ({wins}/{total} comparisons)")
        return verdict, rule_text + "\n\n" + "\n".join(f"- {x}" for x in lines)
    return rule


def _verdict_top40(cells: dict) -> tuple[str, str]:
    lines, ok = [], []
    for label in ("data-params instance", "data-params joint"):
        for (lab, r), runs in cells.items():
            if lab == label:
                share = float(np.mean([c["corrupt_in_top40"] for c in runs]))
                ok.append(share >= 0.95)
                lines.append(f"{label} at {r:.0%}: {share:.3f} of the corrupt samples are in the top 40 % of instance parameters")
    acc = _verdict_better(["ce"], ["data-params instance", "data-params joint"], 0.0, "final", False)(cells)
    verdict = "reproduced" if all(ok) and acc[0] == "reproduced" else \
        "partly reproduced" if any(ok) or acc[0] != "not reproduced" else "not reproduced"
    return verdict, ("rule: share of corrupt samples in the top 40 % >= 0.95 (the paper: ~95 % within 20 "
                     "epochs) and final test accuracy above CE\n\n" + "\n".join(f"- {x}" for x in lines) + "\n\n" + acc[1])


def _verdict_memorisation(cells: dict) -> tuple[str, str]:
    ce = _mean(cells, "ce", 1.0, "train_acc_noisy")
    dp = _mean(cells, "data-params class", 1.0, "train_acc_noisy")
    verdict = "reproduced" if dp < ce else "not reproduced"
    return verdict, (f"rule: with all labels random, the final training accuracy (on the given random labels) "
                     f"of class data parameters stays below CE's\n\n- CE {ce:.4f}, class data parameters {dp:.4f}")


def _verdict_confidence(cells: dict) -> tuple[str, str]:
    runs = cells[("superloss", 0.4)]

    def phase(group: str, part: slice) -> float:
        return float(np.mean([np.nanmean(np.asarray(c[f"conf_curve_{group}"])[part]) for c in runs]))

    n = len(runs[0]["conf_curve_easy"])
    early = {g: phase(g, slice(0, max(1, n // 2))) for g in ("easy", "hard", "noisy")}
    late = {g: phase(g, slice(n - 1, n)) for g in ("easy", "hard", "noisy")}
    ordered = early["easy"] > early["hard"] > early["noisy"]
    rises = late["hard"] > early["hard"] and late["hard"] > late["noisy"]
    verdict = "reproduced" if ordered and rises else "partly reproduced" if ordered or rises else "not reproduced"
    return verdict, ("rule (Fig. 5: hard samples start with a low confidence that rises, noisy ones stay low): "
                     "over the first half of training the median confidence is ordered easy > hard > noisy, and "
                     "by the last epoch the hard samples' confidence has risen and stays above the noisy ones'\n\n"
                     + "\n".join(f"- {g}: first half {early[g]:.3f}, last epoch {late[g]:.3f}" for g in early))


# ------------------------------------------------------------------------------------------ presets

PRESETS: dict[str, Preset] = {
    "superloss-regression": Preset(
        claim="SuperLoss Fig. 4: on digit regression with noisy targets, SuperLoss (fixed tau = 0.5 or the "
              "global average) lowers the test MAE of an L2 or smooth-L1 regressor, the more so the higher the noise.",
        paper="Castells et al., NeurIPS 2020, Sec. 3.2, Fig. 4 (MNIST digit regression, LeNet, noise 0-80 %)",
        variants={
            "l2": {"method": "l2"},
            "l2 + SL tau=0.5": {"method": "superloss", "options": _opts(base_loss="l2", tau="0.5")},
            "l2 + SL avg": {"method": "superloss", "options": _opts(base_loss="l2", tau="avg")},
            "smooth-l1": {"method": "smooth-l1"},
            "smooth-l1 + SL tau=0.5": {"method": "superloss", "options": _opts(base_loss="smooth-l1", tau="0.5")},
            "smooth-l1 + SL avg": {"method": "superloss", "options": _opts(base_loss="smooth-l1", tau="avg")},
        },
        rates=(0.0, 0.2, 0.4, 0.6, 0.8),
        base={"task": "regression", "lr": 0.01},
        quick={"rates": (0.0, 0.4, 0.8), "epochs": 8},
        verdict=_verdict_better(["l2", "smooth-l1"], ["l2 + SL tau=0.5", "l2 + SL avg", "smooth-l1 + SL tau=0.5",
                                                      "smooth-l1 + SL avg"], 0.4, "final", True,
                                own_base={"l2 + SL tau=0.5": "l2", "l2 + SL avg": "l2",
                                          "smooth-l1 + SL tau=0.5": "smooth-l1", "smooth-l1 + SL avg": "smooth-l1"}),
    ),
    "superloss-classification": Preset(
        claim="SuperLoss Fig. 6: under symmetric label noise, CE + SuperLoss beats plain CE, with tau = log C, "
              "the global average or the exponential average alike.",
        paper="Castells et al., NeurIPS 2020, Sec. 3.3, Fig. 6 (CIFAR, 0-80 % noise)",
        variants={
            "ce": {"method": "ce"},
            "SL tau=logC": {"method": "superloss", "options": _opts(tau="logC")},
            "SL avg": {"method": "superloss", "options": _opts(tau="avg")},
            "SL ema": {"method": "superloss", "options": _opts(tau="ema")},
        },
        rates=(0.0, 0.2, 0.4, 0.6, 0.8),
        quick={"rates": (0.0, 0.4, 0.8), "epochs": 8},
        verdict=_verdict_better(["ce"], ["SL tau=logC", "SL avg", "SL ema"], 0.4, "final", False),
    ),
    "imae-table2": Preset(
        claim="IMAE Table 2: under symmetric noise, IMAE (T = 8) fits the clean data better than MAE (which "
              "underfits) and resists the noise better than CE (which memorises it).",
        paper="Wang et al., IMAE, Sec. 5, Table 2 (CIFAR-10, 20/40/60/80 % noise)",
        variants={"ce": {"method": "ce"}, "mae": {"method": "mae"},
                  "imae T=8": {"method": "imae", "options": _opts(imae_T=8.0)}},
        rates=(0.2, 0.5, 0.8),
        quick={"rates": (0.2, 0.8), "epochs": 8},
        verdict=_verdict_better(["ce", "mae"], ["imae T=8"], 0.2, "final", False),
    ),
    "data-params-noise": Preset(
        claim="Data Parameters Fig. 4 / Table 2: at 40 % noise, instance (and joint) data parameters beat CE, "
              "approach the oracle trained on the clean subset, and put ~95 % of the corrupt samples in the "
              "top 40 % of instance parameters.",
        paper="Saxena et al., NeurIPS 2019, Sec. 3.4, Fig. 4, Table 2 (CIFAR-10/100, 40 % noise)",
        variants={
            "ce": {"method": "ce"},
            "oracle (clean subset)": {"method": "ce", "oracle": True},
            "data-params instance": {"method": "data-params", "options": _opts(dp_level="instance", dp_instance_lr=0.2)},
            "data-params joint": {"method": "data-params", "options": _opts(dp_level="joint", dp_instance_lr=0.2)},
        },
        rates=(0.4,),
        quick={"epochs": 8},
        verdict=_verdict_top40,
    ),
    "data-params-random": Preset(
        claim="Data Parameters Sec. 3.5: with all labels random, class data parameters resist memorisation: "
              "their training accuracy stays below CE's.",
        paper="Saxena et al., NeurIPS 2019, Sec. 3.5 (CIFAR-100, 100 % random labels)",
        variants={"ce": {"method": "ce"},
                  "data-params class": {"method": "data-params", "options": _opts(dp_level="class")}},
        rates=(1.0,),
        quick={"epochs": 8},
        verdict=_verdict_memorisation,
    ),
    "superloss-confidence": Preset(
        claim="SuperLoss Fig. 5: the confidence sigma* of clean samples is high, of hard (clean but "
              "misclassified at first) samples intermediate, of noisy samples low.",
        paper="Castells et al., NeurIPS 2020, Sec. 3.3, Fig. 5 (CIFAR-10, 40 % noise)",
        variants={"superloss": {"method": "superloss", "options": _opts(tau="avg")}},
        rates=(0.4,),
        quick={"epochs": 8},
        verdict=_verdict_confidence,
    ),
}


# ------------------------------------------------------------------------------------------ running

def _base_config(data_dir: str | None, preset: Preset, quick: bool) -> TrainConfig:
    if data_dir:
        cfg = TrainConfig(dataset="idx", data_dir=data_dir, model="lenet", limit=10_000, epochs=15, batch_size=128)
    else:
        cfg = TrainConfig(dataset="digits", model="mlp", epochs=30, batch_size=64)
    cfg = replace(cfg, **preset.base)
    if quick:
        cfg = replace(cfg, epochs=preset.quick.get("epochs", cfg.epochs),
                      limit=min(cfg.limit, 3000) if cfg.limit else cfg.limit)
    return cfg


def _oracle_config(cfg: TrainConfig, folder: Path) -> TrainConfig:
    """CE on the clean subset: the training samples whose label the noise left unchanged, as an npz."""
    data, noisy = prepare_data(cfg)
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
    signals = np.load(folder / "signals.npz")
    mask = signals["noise_mask"].astype(bool)
    if label.startswith("data-params") and mask.any():
        sigma = signals["confidence"][-1]
        top = np.argsort(-sigma, kind="stable")[: int(round(0.4 * len(sigma)))]
        out["corrupt_in_top40"] = float(np.isin(np.flatnonzero(mask), top).mean())
    if label == "superloss" and mask.any():
        from curriculoss.plots import sample_groups

        groups = sample_groups(signals["loss"], mask)
        conf = signals["confidence"]
        half = conf[conf.shape[0] // 2:]
        for name, sel in groups.items():
            out[f"conf_{name}"] = float(np.nanmedian(half[:, sel])) if sel.any() else float("nan")
            out[f"conf_curve_{name}"] = [float(np.nanmedian(row[sel])) if sel.any() else float("nan") for row in conf]
    return out


def run_preset(name: str, *, data_dir: str | None = None, quick: bool = False, out: str | Path | None = None,
               seeds: tuple[int, ...] = SEEDS, progress: bool = True, overrides: dict | None = None) -> Path:
    """Train the preset's cells (skipping finished ones) and write its report; returns the report path.

    ``overrides``: changes to the base configuration (e.g. ``{'epochs': 1, 'limit': 200}`` in tests).
    """
    from tqdm.auto import tqdm

    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    preset = PRESETS[name]
    out = Path(out or "runs/reproduce") / (name + ("-quick" if quick else ""))
    base = replace(_base_config(data_dir, preset, quick), **(overrides or {}))
    rates = preset.quick.get("rates", preset.rates) if quick else preset.rates
    prepare_data(replace(base, noise_rate=max(rates)))  # bad data fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, float], list[dict]] = {}
    t0 = time.perf_counter()
    jobs = [(label, rate, seed) for rate in rates for label in preset.variants for seed in seeds]
    for label, rate, seed in tqdm(jobs, desc=name, disable=not progress, dynamic_ncols=True):
        change = dict(preset.variants[label])
        oracle = change.pop("oracle", False)
        cfg = replace(base, noise_rate=rate, seed=seed, **change)
        folder = out / label.replace(" ", "_").replace("=", "") / f"rate{rate:g}" / f"seed{seed}"
        if oracle:
            cfg = _oracle_config(cfg, folder)
        done = folder / "results.json"
        results = json.loads(done.read_text()) if done.exists() else \
            train(cfg, folder, resume=True, progress=progress, position=1)
        cells.setdefault((label, rate), []).append({**results, **_extras(folder, label)})
    wall = time.perf_counter() - t0
    return _report(name, preset, base, rates, seeds, cells, out, quick, data_dir, wall)


def _fmt(values: list[float], scale: float) -> str:
    a = scale * np.asarray(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std():.2f}"


def _report(name, preset, base, rates, seeds, cells, out: Path, quick, data_dir, wall) -> Path:
    regression = base.task == "regression"
    scale, unit = (1.0, "test MAE") if regression else (100.0, "test accuracy (%)")
    head = f"| variant | noise | best {unit} | final {unit} |"
    sep = "|---|---|---|---|"
    extra_cols = []
    if not regression:
        extra_cols = ["train acc, noisy labels (%)", "train acc, true labels (%)"]
    if name == "data-params-noise":
        extra_cols.append("corrupt in top 40 %")
    if extra_cols:
        head += "".join(f" {c} |" for c in extra_cols)
        sep += "---|" * len(extra_cols)
    lines = [head, sep]
    for (label, rate), runs in cells.items():
        row = f"| {label} | {rate:.0%} | {_fmt([r['best'] for r in runs], scale)} | {_fmt([r['final'] for r in runs], scale)} |"
        if not regression:
            row += f" {_fmt([r['train_acc_noisy'] for r in runs], 100)} | {_fmt([r['train_acc_true'] for r in runs], 100)} |"
        if name == "data-params-noise":
            row += f" {_fmt([r['corrupt_in_top40'] for r in runs], 1)} |" if "corrupt_in_top40" in runs[0] else " |"
        lines.append(row)
    if name == "data-params-random":
        lines += ["", "Training accuracy on the (random) given labels, by epoch (mean over seeds):", ""]
        for label in preset.variants:
            curve = np.mean([r["train_acc_curve"] for r in cells[(label, 1.0)]], axis=0)
            lines.append(f"- {label}: " + ", ".join(f"{100 * v:.1f}" for v in curve))
    verdict, rule = preset.verdict(cells) if preset.verdict else ("not judged", "")
    train_s = sum(c.get("seconds", 0.0) for runs in cells.values() for c in runs)
    n_runs = sum(len(runs) for runs in cells.values())
    command = f"curriculoss reproduce {name}" + (" --quick" if quick else "") + (f" --data-dir {data_dir}" if data_dir else "")
    data = f"{base.dataset}" + (f" ({data_dir}, first {base.limit} training samples)" if data_dir else " (scikit-learn, 1437 training / 360 test)")
    text = "\n".join([
        f"## {name}", "",
        f"**Claim.** {preset.claim}", "",
        f"**Paper.** {preset.paper}", "",
        f"**Here.** {data}, model {base.model}, {base.epochs} epochs, batch {base.batch_size}, lr {base.lr} "
        f"(cosine), seeds {list(seeds)}; mean ± std over seeds.", "",
        f"**Command.** `{command}` (training time {train_s / 60:.1f} min, summed over its {n_runs} runs on this "
        f"machine; this invocation {wall / 60:.1f} min, finished cells being reused)", "",
        *lines, "",
        f"![{name}](plot.png)", "",
        f"**Verdict: {verdict}.** {rule}", "",
    ])
    (out / "report.md").write_text(text)
    (out / "cells.json").write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in cells.items()}, indent=1))
    _plot(name, preset, cells, rates, regression, out / "plot.png")
    return out / "report.md"


def _plot(name, preset, cells, rates, regression, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if name == "superloss-confidence":
        runs = cells[("superloss", rates[0])]
        for group in ("easy", "hard", "noisy"):
            curves = np.array([r[f"conf_curve_{group}"] for r in runs])
            ax.plot(np.arange(1, curves.shape[1] + 1), curves.mean(0), label=group)
        ax.set(xlabel="epoch", ylabel="median confidence sigma*", title=f"noise {rates[0]:.0%}")
    elif name == "data-params-random":
        for label in preset.variants:
            curves = np.array([r["train_acc_curve"] for r in cells[(label, 1.0)]])
            ax.plot(np.arange(1, curves.shape[1] + 1), 100 * curves.mean(0), label=label)
        ax.set(xlabel="epoch", ylabel="train accuracy on random labels (%)")
    elif len(rates) == 1:
        labels = list(preset.variants)
        vals = [np.mean([r["final"] for r in cells[(lab, rates[0])]]) * (1 if regression else 100) for lab in labels]
        errs = [np.std([r["final"] for r in cells[(lab, rates[0])]]) * (1 if regression else 100) for lab in labels]
        ax.bar(range(len(labels)), vals, yerr=errs)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set(ylabel="final test " + ("MAE" if regression else "accuracy (%)"), title=f"noise {rates[0]:.0%}")
    else:
        for label in preset.variants:
            x = [100 * r for r in rates]
            y = np.array([np.mean([c["final"] for c in cells[(label, r)]]) for r in rates]) * (1 if regression else 100)
            e = np.array([np.std([c["final"] for c in cells[(label, r)]]) for r in rates]) * (1 if regression else 100)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=2, label=label)
        ax.set(xlabel="label noise (%)", ylabel="final test " + ("MAE" if regression else "accuracy (%)"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def assemble(reports: list[Path], path: Path) -> None:
    """``docs/reproduction.md`` from the presets' reports (numbers copied by the program, not by hand)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["# Reproducing the papers' claims", "",
             "Generated by `curriculoss reproduce all` from the runs it made; every number below comes "
             "from those runs, and each verdict from the rule stated beside it. Scale is reduced (see each "
             "section). Hyper-parameters: the papers' values (SuperLoss lam = 1, IMAE T = 8, the reference "
             "implementation's data-parameter rates, instance lr 0.2 under noise) and the harness's "
             "defaults (SGD lr 0.1 with cosine decay, momentum 0.9, weight decay 5e-4; lr 0.01 for "
             "regression). None was selected on a validation split, and none on the test set: they were "
             "fixed before the runs.", ""]
    for report in reports:
        text = report.read_text()
        name = report.parent.name
        png = report.parent / "plot.png"
        if png.exists():
            target = path.parent / "reproduction" / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png.read_bytes())
        parts.append(text.replace("](plot.png)", f"](reproduction/{name}.png)"))
    path.write_text("\n".join(parts))
