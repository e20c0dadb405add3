"""A grid of runs (methods x noise rates x seeds), summarised as a table and a plot.

Each cell is a run folder `OUT/<method>/rate<r>/seed<s>`; a cell with `results.json` is finished and
never recomputed (its `args.json` must be the cell's configuration: a grid folder is keyed by its whole
configuration), an interrupted one resumes from its checkpoint. Two noise rates that would share a
`rate<r>` folder (equal in 6 significant digits) are refused. The summary (mean +- std over seeds of
the best and final test metric per method and rate) is written as `summary.md` and `summary.csv`,
and `summary.png` plots the final test metric against the noise rate per method. A cell whose run
collapsed (`diverged` in its results, see `curriculoss.harness.divergence`) stays in the means and is
counted in the table's `diverged` column; a single seed prints no standard deviation.
"""
from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from curriculoss.harness.methods import METHODS
from curriculoss.harness import plots
from curriculoss.harness.config import TrainConfig
from curriculoss.harness.progress import stderr_is_terminal
from curriculoss.harness.train import train_or_reuse

__all__ = ["run_grid", "summarise", "format_table", "memorisation_gaps", "check_rates", "clear_grid", "GRID_FILES"]

#: The files of a grid folder besides its cells (`OUT/<method>/...`): what `clear_grid` removes with them.
GRID_FILES = ("grid.json", "summary.md", "summary.csv", "summary.png")


def rate_folder(rate: float) -> str:
    return f"rate{rate:g}"


def cell_dir(out: Path, method: str, rate: float, seed: int) -> Path:
    return out / method / rate_folder(rate) / f"seed{seed}"


def check_rates(rates: list[float]) -> None:
    """Refuse distinct noise rates that would share a cell folder (equal in 6 significant digits)."""
    seen: dict[str, float] = {}
    for rate in rates:
        other = seen.setdefault(rate_folder(rate), rate)
        if other != rate:
            raise ValueError(f"the rates {other!r} and {rate!r} would share the folder {rate_folder(rate)}; give "
                             "rates that differ within 6 significant digits")


def clear_grid(out: str | Path) -> None:
    """Remove a grid's files and its cells' folders (one per method) from `out`; any other file stays."""
    out = Path(out)
    for name in GRID_FILES:
        (out / name).unlink(missing_ok=True)
    for method in METHODS:
        if (out / method).is_dir():
            shutil.rmtree(out / method)


def run_grid(base: TrainConfig, methods: list[str], rates: list[float], seeds: list[int], out: str | Path,
             *, progress: bool = True) -> list[dict]:
    """Train every cell not finished yet; return one row per cell with its results.

    Repeated methods, rates or seeds are dropped (first occurrence kept): a repeated cell is the same
    run, and counting it again would report one run as several seeds with a spread of 0."""
    from tqdm.auto import tqdm

    methods, rates, seeds = (list(dict.fromkeys(v)) for v in (methods, rates, seeds))
    check_rates(rates)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(m, r, s) for r in rates for m in methods for s in seeds]
    rows = []
    grid = tqdm(cells, desc="grid", disable=not progress or not stderr_is_terminal(), position=0, dynamic_ncols=True)
    for method, rate, seed in grid:
        grid.set_postfix_str(f"{method} rate={rate:g} seed={seed}")
        folder = cell_dir(out, method, rate, seed)
        cfg = replace(base, method=method, noise_rate=rate, seed=seed)
        results = train_or_reuse(cfg, folder, progress=progress, position=1)
        rows.append({"method": method, "noise_rate": rate, "seed": seed, **results})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of the best and final metric per (method, rate)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["noise_rate"]), []).append(row)
    summary = []
    for (method, rate), group in groups.items():
        best = np.array([g["best"] for g in group])
        final = np.array([g["final"] for g in group])
        summary.append({
            "method": method, "noise_rate": rate, "seeds": len(group), "metric": group[0]["metric"],
            "best_mean": best.mean(), "best_std": best.std(), "final_mean": final.mean(), "final_std": final.std(),
            "seconds": float(np.mean([g.get("seconds", np.nan) for g in group])),
            "diverged": int(sum(bool(g.get("diverged", False)) for g in group)),
        })
    return summary


def format_table(summary: list[dict]) -> str:
    """Markdown table: one row per method and noise rate."""
    scale = 100.0 if summary and summary[0]["metric"] == "accuracy" else 1.0
    unit = "test accuracy (%)" if scale == 100.0 else "test MAE"
    lines = [f"| method | noise | best {unit} | final {unit} | seeds | diverged | s/run |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        diverged = s.get("diverged", 0)
        flag = f"**{diverged}/{s['seeds']}**" if diverged else f"0/{s['seeds']}"
        lines.append(
            f"| {s['method']} | {_percent(s['noise_rate'])} | {_pm(s, 'best', scale)} | {_pm(s, 'final', scale)} "
            f"| {s['seeds']} | {flag} | {s['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _percent(rate: float) -> str:
    """A noise rate in percent, to the digits that tell the grid's rates apart (0.125: 12.5%)."""
    return f"{100 * rate:g}%"


def _pm(s: dict, key: str, scale: float) -> str:
    """`mean ± std` over seeds; one seed has no spread to show, so only its value is printed."""
    if s["seeds"] < 2:
        return f"{scale * s[key + '_mean']:.2f} (1 seed)"
    return f"{scale * s[key + '_mean']:.2f} ± {scale * s[key + '_std']:.2f}"


def memorisation_gaps(summary: list[dict], method: str = "ce") -> str:
    """One line per noise rate: `method`'s best-minus-final test figure (how much it memorised the noise)."""
    cells = sorted((s for s in summary if s["method"] == method), key=lambda s: s["noise_rate"])
    if not cells:
        return ""
    scale = 100.0 if cells[0]["metric"] == "accuracy" else 1.0
    sign = 1.0 if cells[0]["metric"] == "accuracy" else -1.0  # MAE: lower is better
    parts = [f"{_percent(c['noise_rate'])} noise {sign * scale * (c['best_mean'] - c['final_mean']):+.2f}" for c in cells]
    unit = "points" if scale == 100.0 else "MAE"
    return f"{method} best minus final ({unit}, mean over seeds; memorisation of the noisy labels): " + ", ".join(parts)


def write_summary(summary: list[dict], out: str | Path) -> None:
    out = Path(out)
    gaps = memorisation_gaps(summary)
    (out / "summary.md").write_text(format_table(summary) + "\n" + (f"\n{gaps}\n" if gaps else ""))
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    plots.save_figure(out / "summary.png", plot_summary, summary)


def plot_summary(summary: list[dict], ax=None):
    """Final test metric (mean +- std) against noise rate, one line per method (SuperLoss Figs. 4, 6)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    for method in dict.fromkeys(s["method"] for s in summary):
        cells = sorted((s for s in summary if s["method"] == method), key=lambda s: s["noise_rate"])
        x = [100 * c["noise_rate"] for c in cells]
        y = np.array([c["final_mean"] for c in cells])
        e = np.array([c["final_std"] for c in cells])
        ax.plot(x, y, marker="o", label=method)
        ax.fill_between(x, y - e, y + e, alpha=0.2)
    ax.set(xlabel="label noise (%)", ylabel=f"final test {summary[0]['metric']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
