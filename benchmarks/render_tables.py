"""Render the documentation's result tables from the committed result files in ``docs/results/``.

Every table of figures in README.md and the pages under docs/ sits between two markers::

    <!-- table:NAME -->
    ...generated: the table, then how its figures were measured...
    <!-- /table:NAME -->

and is rendered here from one result file (JSON: the figures, the command that made them, the machine
and the date; see ``benchmarks/_results.py``). Nothing between the markers is typed by hand.

    python benchmarks/render_tables.py            # rewrite the tables in README.md and docs/
    python benchmarks/render_tables.py --check    # exit 1 if any table differs from its result file
    python benchmarks/render_tables.py import-bench OUT --wall-seconds S   # a `curriculoss bench` folder
                                                  # -> docs/results/main-job.json (+ its plot)
    python benchmarks/render_tables.py import-probe OUT/probe.csv   # the SuperLoss collapse probe's log
                                                  # -> docs/results/superloss-collapse.json (+ its plot)

``import-bench`` reads the grid folder as ``curriculoss bench`` writes it (``grid.json``, ``summary.csv``,
``summary.png``) and records it with the command, this machine and the date the summary was written.
``tests/test_docs_tables.py`` checks that rendering from the committed files gives exactly what the
documents contain.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
MARKER = re.compile(r"(?P<open><!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table:(?P=name) -->)", re.S)

METHOD_NAMES = {"ce": "CE", "superloss": "SuperLoss", "data-params": "Data Parameters", "imae": "IMAE",
                "mae": "MAE", "gce": "GCE", "sce": "SCE", "focal": "focal"}


# --------------------------------------------------------------------------------------------- helpers

def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def documents() -> list[Path]:
    """README.md and every Markdown page under docs/ (the files whose tables are rendered)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _pct(rate: float) -> str:
    return f"{100 * rate:g} %"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(m: dict) -> str:
    name = m.get("cpu", "unknown CPU")
    head = f"a {m['cores']}-core {name}" if m.get("cores") else name
    extras = [m[k] for k in ("gpu",) if m.get(k)]
    if m.get("torch"):
        extras.append(f"torch {m['torch']}")
    load_avg = m.get("load_average")
    if isinstance(load_avg, dict) and load_avg.get("before"):
        extras.append(f"load average {load_avg['before'][0]:.1f} at the start")
    elif isinstance(load_avg, str):
        extras.append(load_avg)
    return head + (f" ({', '.join(extras)})" if extras else "")


def source(record: dict) -> str:
    """How the figures of a table were measured: command, machine, date (and whether transcribed)."""
    date = record["date"][:10]
    wall = f", {record['wall_seconds'] / 60:.1f} min wall" if record.get("wall_seconds") else ""
    if record.get("transcribed"):
        return (f"*Transcribed from an earlier record, not re-run for this page:* `{record['command']}` on "
                f"{_machine(record['machine'])}, {date}{wall}.")
    return f"*Measured with* `{record['command']}` on {_machine(record['machine'])}, {date}{wall}."


def _rendered(name: str):
    """A table rendered from result file ``name``: the function renders the table (and what is written under
    it) from the file's data, and how the figures were measured follows."""
    def wrap(render: Callable[[dict], str]) -> Callable[[], str]:
        @functools.wraps(render)
        def table() -> str:
            record = load(name)
            return render(record["data"]) + "\n\n" + source(record)
        return table
    return wrap


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _ci(v: dict) -> str:
    return f"{v['ratio']:.3f}x [{v['low']:.3f}, {v['high']:.3f}]"


def _goal(v: dict) -> str:
    goal = v.get("goal")
    if goal is None:
        return ""
    if v["high"] <= goal:
        verdict = "met"
    elif v["low"] > goal:
        verdict = "not met"
    else:
        verdict = "undecided"
    return f"<= {goal:.2f}x: {verdict}"


# --------------------------------------------------------------------------------------------- main job

@_rendered("main-job")
def main_job(data: dict) -> str:
    rows = []
    for s in data["summary"]:
        scale = 100.0 if s["metric"] == "accuracy" else 1.0
        pm = lambda key: f"{scale * s[key + '_mean']:.2f} ± {scale * s[key + '_std']:.2f}"  # noqa: E731
        rows.append([s["method"], _pct(s["noise_rate"]), pm("best"), pm("final"), f"{s['diverged']}/{s['seeds']}"])
    base = data["grid"]["base"]
    text = _table(["method", "label noise", "best test accuracy (%)", "final test accuracy (%)", "collapsed runs"], rows)
    ce = sorted((s for s in data["summary"] if s["method"] == "ce"), key=lambda s: s["noise_rate"])
    gaps = ", ".join(f"{100 * (s['best_mean'] - s['final_mean']):+.2f} points at {_pct(s['noise_rate'])} noise" for s in ce)
    text += (f"\n\nMean ± standard deviation over seeds {', '.join(map(str, data['grid']['seeds']))}; {base['dataset']}, "
             f"{base['model']}, {base['epochs']} epochs, batch {base['batch_size']}, lr {base['lr']:g}. "
             f"CE's best minus final test accuracy (how much it memorised the wrong labels by the end): {gaps}.")
    return text


def headline() -> str:
    """README's first result, one sentence: the main job at its highest noise rate."""
    record = load("main-job")
    summary = record["data"]["summary"]
    rate = max(s["noise_rate"] for s in summary)
    at = {s["method"]: s for s in summary if s["noise_rate"] == rate}
    ce = at.pop("ce")
    others = sorted(at.values(), key=lambda s: -s["final_mean"])
    return (f"**Headline.** On the main job below (`curriculoss bench`: digits, an MLP, {_pct(rate)} of the training "
            f"labels wrong, mean of {ce['seeds']} seeds), plain cross-entropy peaks at {100 * ce['best_mean']:.2f} % test "
            f"accuracy and ends at {100 * ce['final_mean']:.2f} %; "
            + ", ".join(f"{METHOD_NAMES[s['method']]} ends at {100 * s['final_mean']:.2f} %" for s in others) + ".")


# --------------------------------------------------------------------------------------------- defaults grid

def _grid_cells(data: dict) -> tuple[dict, dict]:
    """(mean final per (dataset, model, rate, method), CE best - final per (dataset, model, rate))."""
    finals: dict[tuple, list[float]] = {}
    bests: dict[tuple, list[float]] = {}
    collapsed: dict[tuple, int] = {}
    for r in data["rows"]:
        key = (r["dataset"], r["model"], r["noise_rate"], r["method"])
        finals.setdefault(key, []).append(r["final"])
        if r.get("best") is not None:
            bests.setdefault(key, []).append(r["best"])
        collapsed[key] = collapsed.get(key, 0) + int(bool(r.get("collapsed")))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    cells = {k: (mean(v), collapsed[k]) for k, v in finals.items()}
    gaps = {}
    for k, v in finals.items():
        if k[3] == "ce":
            if k in bests:
                gaps[k[:3]] = mean(bests[k]) - mean(v)
            else:
                gaps[k[:3]] = data["ce_best_minus_final"]["|".join([k[0], k[1], f"{k[2]:g}"])]
    return cells, gaps


def _grid_order(data: dict) -> list[tuple]:
    seen = {}
    for r in data["rows"]:
        seen.setdefault((r["dataset"], r["model"], r["noise_rate"]), None)
    return list(seen)


def _defaults_grid(data: dict) -> str:
    cells, gaps = _grid_cells(data)
    rows = []
    for ds, model, rate in _grid_order(data):
        row = [ds, model, _pct(rate)]
        for m in data["methods"]:
            value, bad = cells[(ds, model, rate, m)]
            row.append(f"**{100 * value:.1f} ({bad} collapsed)**" if bad else f"{100 * value:.1f}")
        row.append(f"{100 * gaps[(ds, model, rate)]:+.1f}")
        rows.append(row)
    n_bad = sum(bad for _, bad in cells.values())
    text = _table(["data set", "model", "label noise", *data["methods"], "CE best - final"], rows)
    text += (f"\n\nFinal test accuracy (%), seed{'s' if len(data['seeds']) > 1 else ''} "
             f"{', '.join(map(str, data['seeds']))}; {data['epochs']} epochs, batch {data['batch_size']}, momentum "
             f"{data['momentum']:g}, weight decay {data['weight_decay']:g}, cosine schedule, lr per model "
             f"({', '.join(f'{k} {v:g}' for k, v in sorted(data['lr'].items()))}). {len(data['rows'])} runs, "
             f"{n_bad} collapsed (a collapsed run, diverged or at chance, would be in bold).")
    return text


defaults_grid = _rendered("defaults-grid")(_defaults_grid)
defaults_grid_100 = _rendered("defaults-grid-100")(_defaults_grid)


@_rendered("defaults-grid")
def held_accuracy(data: dict) -> str:
    """40 % noise, CE against the three methods, per data set and model (the defaults grid)."""
    cells, gaps = _grid_cells(data)
    methods = ["ce", "superloss", "data-params", "imae"]
    rows = []
    for ds, model, rate in _grid_order(data):
        if rate != 0.4:
            continue
        ce_best = cells[(ds, model, rate, "ce")][0] + gaps[(ds, model, rate)]
        rows.append([ds, model, *[f"{100 * cells[(ds, model, rate, m)][0]:.1f}" for m in methods], f"{100 * ce_best:.1f}"])
    text = _table(["data set", "model", *[f"{METHOD_NAMES[m]}" for m in methods], "CE, best during training"], rows)
    text += (f"\n\nFinal test accuracy (%) after {data['epochs']} epochs with 40 % symmetric label noise, the command "
             f"line's defaults, seed {', '.join(map(str, data['seeds']))}; the last column is CE's best test accuracy "
             "during training, before it memorised the wrong labels.")
    return text


# --------------------------------------------------------------------------------------------- flagging

def _setting(name: str) -> str:
    kind, rate = name.split(":")
    return f"{'sym' if kind == 'symmetric' else kind} {float(rate):g}"


def _ranking(name: str) -> str:
    return name.replace("(default)", "(**default**)")


def _flag_rows(data: dict, only=None) -> list[list[str]]:
    rows = []
    for setting, rankings in data["settings"].items():
        base = rankings["cleanlab 5-fold"]["sample_epochs"]
        for name, f in rankings.items():
            if only is not None and not only(name):
                continue
            rows.append([_setting(setting), _ranking(name), f"{f['auroc']:.4f}", f"{f['average_precision']:.4f}",
                         f"{f['precision_at_k']:.4f}", f"{int(f['estimated_num_issues'])} / {int(f['num_noisy'])}",
                         f"{f['sample_epochs'] / base:.2f}x"])
    return rows


def _flag_note(data: dict) -> str:
    what = (f"the first {data['limit']:,} MNIST training images" if data["dataset"] == "idx" and data.get("limit")
            else "a generated set (`make_classification`: 6,000 points, 20 features, 10 classes of two clusters, "
                 "80 % for training)" if data["dataset"] == "blobs" else data["dataset"])
    return (f"{what}, {data['model']}, seed {data['seed']}. cleanlab: 5-fold cross-validated probabilities "
            f"({_n(data['epochs_per_fold'], 'epoch')} per fold, plain CE), `cleanlab.rank.get_label_quality_scores`; ours: one "
            f"`curriculoss train` run of {_n(data['our_epochs'], 'epoch')} per method (a fifth of cleanlab's training "
            f"sample-epochs), scored by `curriculoss.flag`; data parameters at the {data['dp_level']} level, instance lr "
            f"{data['dp_instance_lr']:g}. Compute: training sample-epochs relative to cleanlab's.")


FLAG_HEAD = ["noise", "ranking", "AUROC", "AP", "precision@k", "estimated / true count", "compute"]


@_rendered("flag-mnist")
def flag_mnist(data: dict) -> str:
    return _table(FLAG_HEAD, _flag_rows(data)) + "\n\n" + _flag_note(data)


@_rendered("flag-mnist")
def flag_summary(data: dict) -> str:
    """README: the default ranking (AUM of one CE run) against cleanlab 5-fold, per noise setting."""
    rows = []
    for setting, rankings in data["settings"].items():
        base = rankings["cleanlab 5-fold"]
        for name in ("ce: aum, early window (default)", "cleanlab 5-fold"):
            f = rankings[name]
            label = "curriculoss: AUM of one CE run (default)" if name != "cleanlab 5-fold" else "cleanlab, 5-fold cross-validation"
            rows.append([_setting(setting), label, f"{f['auroc']:.4f}", f"{f['precision_at_k']:.4f}",
                         f"{int(f['estimated_num_issues'])} / {int(f['num_noisy'])}",
                         f"{f['sample_epochs'] / base['sample_epochs']:.2f}x"])
    text = _table(["noise", "ranking", "AUROC", "precision@k", "estimated / true count", "compute"], rows)
    text += (f"\n\nThe first {data['limit']:,} MNIST training images, {data['model']}; compute is training sample-epochs "
             f"({data['our_epochs']} epochs on all samples against {data['epochs_per_fold']} per fold on four fifths).")
    return text


def flag_blobs() -> str:
    parts = []
    for name in ("flag-blobs-15", "flag-blobs-200"):
        record = load(name)
        parts.append((record, [[str(record["data"]["epochs_per_fold"]), *row] for row in _flag_rows(record["data"])]))
    text = _table(["epochs per fold", *FLAG_HEAD], [row for _, rows in parts for row in rows])
    text += "\n\n" + _flag_note(parts[0][0]["data"])
    for record, _ in parts:
        text += "\n\n" + source(record)
    return text


def _scores_cell(f: dict) -> str:
    if f.get("num_noisy", 0) == 0:
        return f"{int(f['estimated_num_issues'])} flagged"
    return f"{f['auroc']:.4f} / {f['precision_at_k']:.3f} / {int(f['estimated_num_issues'])}"


SCORE_COLUMNS = ["aum, early window", "aum, all epochs", "loss, last half", "loss, all epochs"]


@_rendered("flag-scores")
def flag_scores(data: dict) -> str:
    runs = data["runs"]
    rows = []
    for run in runs.values():
        if run["method"] != "ce":
            continue
        first = next(iter(run["rows"].values()))
        label = (f"{_setting(run['noise'] + ':' + str(run['noise_rate']))}, {run['epochs']} epochs (window 1-{run['window']})"
                 if run["noise_rate"] else f"clean, {run['epochs']} epochs (window 1-{run['window']})")
        rows.append([label, str(int(first["num_noisy"])), *[_scores_cell(run["rows"][c]) for c in SCORE_COLUMNS]])
    text = _table(["CE run", "true count", "**AUM, early window** (default)", "AUM, all epochs", "loss, last half",
                   "loss, all epochs"], rows)
    text += ("\n\nEach cell: AUROC / precision at k / estimated count, against the run's own noise mask on the training "
             f"set ({data['dataset']}, {data['model']}, seed {data['seed']}).")
    return text


@_rendered("flag-scores")
def flag_scores_worst(data: dict) -> str:
    runs = data["runs"]
    methods = list(dict.fromkeys(r["method"] for r in runs.values()))
    columns = SCORE_COLUMNS + ["confidence, last half", "confidence, all epochs"]
    rows = []
    for m in methods:
        noisy = [r for r in runs.values() if r["method"] == m and r["noise_rate"]]
        clean = [r for r in runs.values() if r["method"] == m and not r["noise_rate"]]
        row = [m]
        for c in columns:
            cells = [r["rows"][c] for r in noisy if c in r["rows"]]
            if not cells:
                row.append("-")
                continue
            err = max(abs(f["estimated_num_issues"] - f["num_noisy"]) / f["num_noisy"] for f in cells)
            flagged = max((int(r["rows"][c]["estimated_num_issues"]) for r in clean if c in r["rows"]), default=0)
            row.append(f"{min(f['auroc'] for f in cells):.4f} / {min(f['precision_at_k'] for f in cells):.3f} / "
                       f"{100 * err:.0f} % / {flagged}")
        rows.append(row)
    head = {"aum, all epochs": "AUM, all epochs", "loss, last half": "loss, last half", "loss, all epochs": "loss, all epochs",
            "confidence, last half": "own confidence, last half", "confidence, all epochs": "own confidence, all epochs"}
    text = _table(["runs of", "**AUM, early window** (default)", *[head[c] for c in columns[1:]]], rows)
    text += ("\n\nWorst case over each method's noisy runs: lowest AUROC / lowest precision at k / largest count "
             "error / most samples flagged on clean labels.")
    return text


# --------------------------------------------------------------------------------------------- speed

STEP_LABELS = {"ce_again": "a second plain CE (control)", "superloss": "SuperLoss 'avg' + smoothing",
               "superloss_torch": "SuperLoss, torch operations (as on a GPU)", "superloss_fused": "SuperLoss, `fused=True`",
               "dp_instance": "Data Parameters, instance level", "dp_joint": "Data Parameters, joint",
               "imae": "IMAE (T = 8)", "floor_weighted": "floor: CE times fixed weights",
               "floor_node": "floor: the same in a Python autograd node"}


@_rendered("step")
def overhead(data: dict) -> str:
    """README: each method's LeNet-5 step against plain CE."""
    v = data["variants"]
    rows = [[STEP_LABELS[k], _ci(v[k]), _goal(v[k])] for k in ("superloss", "dp_instance", "imae", "ce_again") if k in v]
    text = _table(["method", "training step / plain CE step (95 % CI)", "goal"], rows)
    text += (f"\n\nLeNet-5, batch {data['batch_size']}, CPU, {_n(data['threads'], 'torch thread')}, "
             f"N = {data['num_samples']:,} training samples; plain CE step {v['ce']['step_ms']:.1f} ms.")
    return text


@_rendered("step")
def step(data: dict) -> str:
    v = data["variants"]
    rows = [["plain CE", f"{v['ce']['step_ms']:.2f}", "1", "", str(v["ce"]["ops"]),
             f"{v['ce']['loss_part_us_back_to_back']:.0f} / {v['ce']['loss_part_us_after_forward']:.0f}"]]
    for k, label in STEP_LABELS.items():
        if k not in v:
            continue
        rows.append([label, f"{v[k]['step_ms']:.2f}", _ci(v[k]), _goal(v[k]), str(v[k]["ops"]),
                     f"{v[k]['loss_part_us_back_to_back']:.0f} / {v[k]['loss_part_us_after_forward']:.0f}"])
    text = _table(["variant", "step, median (ms)", "/ plain CE (95 % CI)", "goal", "aten ops, loss part",
                   "loss part alone (us): back to back / after a forward"], rows)
    text += (f"\n\n{data['rounds']} interleaved rounds in {data['processes']} processes, batch {data['batch_size']}, "
             f"{_n(data['threads'], 'torch thread')}, N = {data['num_samples']:,}.")
    return text


@_rendered("lambertw")
def lambertw(data: dict) -> str:
    rows = [[r["input"], r["variant"], f"{r['scipy_ms']:.3f}", f"{r['ours_ms']:.3f}",
             f"{r['speedup']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]", str(r["ops"]), f"{r['max_abs_difference']:.1e}"]
            for r in data["rows"]]
    text = _table(["input", "curriculoss", "scipy (ms)", "curriculoss (ms)", "scipy / curriculoss (95 % CI)",
                   "aten ops", "max abs difference"], rows)
    text += (f"\n\n{data['dtype']}, CPU, {_n(data['threads'], 'torch thread')}; medians of interleaved "
             "calls. Goals: at least 20x scipy on 1M float32 values, faster than scipy on 128.")
    return text


@_rendered("detection")
def detection(data: dict) -> str:
    rows = [[f"focal + SuperLoss ({k})", f"{v['ms']:.1f}", _ci(v), _goal(v)] for k, v in data["variants"].items()]
    text = _table(["variant", "forward + backward (ms)", "/ focal alone (95 % CI)", "goal"], rows)
    text += (f"\n\n{data['anchors']:,} anchors x {data['classes']} classes, 10 % of the anchors ignored (`mask`), "
             f"`tau='avg'`; focal alone {data['focal_ms']:.1f} ms; {data['rounds']} interleaved rounds, "
             f"{_n(data['threads'], 'torch thread')}.")
    return text


@_rendered("data-parameters")
def data_parameters(data: dict) -> str:
    ms = data["step_ms"]
    labels = {"joint_2.4M_over_50k": "joint, N = 2.4M / N = 50K", "joint_60k_over_ce": "joint, N = 60K / plain CE"}
    rows = [[labels[k], f"{v:.3f}x", f"<= {data['goals'][k]:.2f}x: {'met' if v <= data['goals'][k] else 'not met'}"]
            for k, v in data["ratios"].items()]
    text = _table(["LeNet-5 step", "ratio of medians", "goal"], rows)
    text += (f"\n\nBatch {data['batch_size']}, CPU, {_n(data['threads'], 'torch thread')}, {data['repeats']} interleaved "
             f"repeats; median step: plain CE {ms['ce']:.2f} ms, N = 50K {ms['dp_50k']:.2f} ms, N = 60K "
             f"{ms['dp_60k']:.2f} ms, N = 2.4M {ms['dp_2.4M']:.2f} ms.")
    return text


def _bytes(b: float) -> str:
    return f"{b:,.0f} B" if b < 10_000 else f"{b / 1024:,.1f} KiB"


@_rendered("distributed")
def distributed(data: dict) -> str:
    d = data["distributed"]
    rows = [[m["label"], f"{m['step_ms_1']:.2f}", f"{m['step_ms_2']:.2f}", _bytes(m["library_bytes"]), _bytes(m["ddp_bytes"])]
            for m in d["methods"].values()]
    text = _table(["method", "1 process (ms)", "2 processes (ms)", "bytes sent per rank per step by curriculoss",
                   "by DDP (gradients)"], rows)
    s = data["scale"]
    ratio = s["ratio"]
    text += (f"\n\ngloo on CPU, LeNet-5, global batch {d['global_batch']}, one thread per process, median of {d['steps']} "
             f"steps. Joint data parameters with N = 10,000,000 against N = 100,000 (one process): "
             f"{ratio:.3f}x the step time (goal <= {s['goal']:.2f}x: {'met' if ratio <= s['goal'] else 'not met'}), "
             f"{s['memory_mib_10M']:.0f} MiB of instance parameters and momentum.")
    return text


def _mb(value) -> str:
    return "" if value is None else f"{value:,.0f} MB"


@_rendered("flag-scale")
def flag_scale(data: dict) -> str:
    """Recording and flagging N synthetic samples over E epochs, beside cleanlab's find_label_issues."""
    rows = []
    for r in data["rows"]:
        cleanlab = (f"{r['cleanlab_seconds']:.1f} s, {_mb(r['cleanlab_peak_mb'])}" if "cleanlab_seconds" in r
                    else "not run (above the size given to it)")
        same = r.get("compare")
        rows.append([f"{r['n']:,}", f"{r['epochs']} x {r['classes']}", f"{r['record_seconds_per_epoch']:.2f} s",
                     f"{_mb(r['record_peak_mb'])} ({_mb(r['record_rss_before_mb'])} before the recorder)",
                     f"{r['signals_bytes'] / 2**30:.2f} GiB", f"{r['flag_seconds']:.0f} s", _mb(r["flag_peak_mb"]),
                     f"{r['auroc']:.4f}" + (f" (float16: {r['float16_auroc']:.4f})" if "float16_auroc" in r else ""),
                     "" if same is None else ("equal" if same["scores_equal"] and same["ranking_equal"]
                                              and same["count_equal"] else "DIFFERENT"),
                     cleanlab])
    text = _table(["N", "epochs x classes", "recorder per epoch", "peak memory while recording", "signals on disk",
                   "`curriculoss flag`", "its peak memory", "AUROC", "in memory vs in blocks",
                   "cleanlab `find_label_issues`"], rows)
    text += (f"\n\nSynthetic runs with {100 * data['noise']:.0f} % of the labels wrong, recorded in batches of "
             f"{data['batch']:,}. Recorder per epoch: its `update` and `end_epoch` calls only (the "
             "generator's logits excluded). Peak memory: the process's own maximum resident memory, each step in its "
             "own process. cleanlab ranks probabilities of the same N and classes.")
    return text


@_rendered("flag-scale-mnist")
def flag_scale_mnist(data: dict) -> str:
    """One process against two under torchrun (and against a control), on the MNIST training images."""
    d = data["real_run"]
    rows = [[f"rank {r}", _mb(d[f"rank{r}"]["rss_epoch2_mb"]), _mb(d[f"rank{r}"]["rss_last_mb"]),
             f"{d[f'rank{r}']['growth_mb']:+.2f} MB", _mb(d[f"rank{r}"]["peak_mb"])] for r in (0, 1)]
    text = _table(["torchrun process", "resident memory after epoch 2", f"after epoch {d['epochs']}", "growth", "peak"],
                  rows)
    pairs = (("2 processes", d), ("1 process, 2 threads (control)", d["control"]))
    rows = [[name, ", ".join(c["equal"]), f"{c['loss']['first_epoch_largest']:.2f} / {c['loss']['median']:.3f}",
             f"{c['margin']['first_epoch_largest']:.2f} / {c['margin']['median']:.3f}",
             f"{100 * c['predicted_agreement']:.1f} %", f"{c['auroc'][1]:.5f} (one process: {c['auroc'][0]:.5f})"]
            for name, c in pairs]
    text += "\n\n" + _table(["against one process, 1 thread", "equal", "loss: largest difference at epoch 1 / median",
                               "margin: the same", "same predicted class", "flag AUROC"], rows)
    text += (f"\n\n`curriculoss train` on the {d['samples']:,} MNIST training images (MLP, 40 % symmetric noise, "
             f"{d['epochs']} epochs). A table kept in memory would grow by {d['table_mb_per_epoch']:.2f} MB per epoch on "
             "every rank. Two trainings whose sums are rounded in another order (two processes' gradients, or two "
             "threads' matrix products) drift apart from the first steps; they record the same labels and rank the "
             f"wrong ones alike. Wall time {d['seconds_one_process']:.0f} s in one process, "
             f"{d['seconds_two_processes']:.0f} s in two.")
    return text


@_rendered("superloss-collapse")
def superloss_collapse(data: dict) -> str:
    """The SuperLoss collapse probe (benchmarks/probes/superloss_collapse.py), per seed."""
    rows = []
    for r in data["seeds"]:
        acc = r["test_accuracy"]
        rows.append([str(r["seed"]), f"{100 * acc['paper']:.2f} %", f"{100 * acc['normalised']:.2f} %", f"{100 * acc['ce']:.2f} %",
                     f"{r['largest_batch_loss']:.1f} at step {r['largest_batch_loss_step']}",
                     f"{r['cap_share_before']:.2f} / {r['mean_sigma_before']:.2f}",
                     f"{r['tau_max']:.2f}", f"{r['grad_norm_max']['paper']:.1f} / {r['grad_norm_max']['ce']:.1f}"])
    text = _table(["seed", "paper step: test acc.", "normalised step", "CE", "largest batch loss (paper step)",
                   "steps 10 to it: median share at the cap / median mean sigma*", "largest tau",
                   "largest gradient norm, paper step / CE"], rows)
    d = data
    text += (f"\n\nTest accuracy after {_n(d['epochs'], 'epoch')}; {d['model']} on the first {d['limit']:,} MNIST training "
             f"images, SGD lr {d['lr']:g}, momentum 0.9, batch {d['batch_size']}, SuperLoss `tau='avg'`, `lam=1`, smoothing 0.9.")
    return text


# --------------------------------------------------------------------------------------------- which method when

THREE = ("superloss", "data-params", "imae")
BASELINES = ("gce", "sce")


def _noise_label(row: dict) -> str:
    """A grid row's label noise: "0 %", or the rate and kind ("40 % symmetric")."""
    return "0 %" if row["noise_rate"] == 0 else f"{_pct(row['noise_rate'])} {row.get('noise', 'symmetric')}"


def _group(rows: list[dict], key: Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    """The rows by ``key(row)``, the keys in the order they first appear."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _mean(rows: list[dict], field: str) -> float:
    return sum(r[field] for r in rows) / len(rows)


def _which_cells(data: dict) -> dict[tuple, dict[str, tuple[float, float, int]]]:
    """{(dataset, model, noise label): {method: (mean final, mean best, diverged runs)}}, in the grid's order."""
    cells: dict[tuple, dict[str, tuple[float, float, int]]] = {}
    for (*cell, method), rs in _group(data["rows"], lambda r: (r["dataset"], r["model"], _noise_label(r),
                                                              r["method"])).items():
        cells.setdefault(tuple(cell), {})[method] = (_mean(rs, "final"), _mean(rs, "best"),
                                                     sum(bool(r["diverged"]) for r in rs))
    return cells


@_rendered("which-method")
def which_method(data: dict) -> str:
    """Every cell of the grid: each method's final and best test accuracy, the highest final in bold."""
    rows = []
    for (ds, model, noise), cell in _which_cells(data).items():
        top = max(v[0] for v in cell.values())
        row = [ds, model, noise]
        for m in data["methods"]:
            final, best, bad = cell[m]
            text = f"{100 * final:.1f} / {100 * best:.1f}" + (f" ({bad} diverged)" if bad else "")
            row.append(f"**{text}**" if final == top else text)
        rows.append(row)
    head = ["data set", "model", "label noise", *(METHOD_NAMES[m] for m in data["methods"])]
    return _table(head, rows) + (
        f"\n\nFinal / best test accuracy (%), mean over seeds {', '.join(map(str, data['seeds']))}; bold: the highest "
        f"final in the row. Every run has the command line's defaults: {data['epochs']} epochs, batch "
        f"{data['batch_size']}, cosine schedule, lr per model ({', '.join(f'{k} {v:g}' for k, v in sorted(data['lr'].items()))}).")


@_rendered("which-method")
def which_method_summary(data: dict) -> str:
    """Per kind of noise: each method's mean final accuracy over the grid's data sets and models, and in how many
    of them it ends highest; then the three methods against the goals they are held to."""
    cells = _which_cells(data)
    labels = list(dict.fromkeys(k[2] for k in cells))
    rows = []
    for label in labels:
        at = [c for k, c in cells.items() if k[2] == label]
        wins = {m: sum(c[m][0] == max(v[0] for v in c.values()) for c in at) for m in data["methods"]}
        rows.append([label, *(f"{100 * sum(c[m][0] for c in at) / len(at):.1f} ({wins[m]})" for m in data["methods"])])
    text = _table(["label noise", *(METHOD_NAMES[m] for m in data["methods"])], rows)
    drop = {m: max(c[m][1] - c[m][0] for k, c in cells.items() if k[2] == "80 % symmetric") for m in THREE}
    clean = {m: min(c[m][0] - c["ce"][0] for k, c in cells.items() if k[2] == "0 %") for m in THREE}
    noisy = [c for k, c in cells.items() if k[2] != "0 %"]
    close = sum(max(c[m][0] for m in THREE) >= max(c[b][0] for b in BASELINES) - 0.01 for c in noisy)
    text += (f"\n\nMean final test accuracy (%) over the {len(cells) // len(labels)} data sets and models; in brackets, "
             "in how many of them the method ends highest.\n\n"
             "- At 80 % symmetric noise, the largest best-minus-final drop (goal: under 5 points): "
             + ", ".join(f"{METHOD_NAMES[m]} {100 * drop[m]:.1f}" for m in THREE) + ".\n"
             "- On clean labels, the lowest final accuracy minus CE's (goal: -0.5 point or above): "
             + ", ".join(f"{METHOD_NAMES[m]} {100 * clean[m]:+.2f}" for m in THREE) + ".\n"
             f"- With noisy labels, the best of the three within 1 point of the better of GCE and SCE, or above: "
             f"{close} of {len(noisy)} cells (goal: all).")
    return text


@_rendered("which-method-holdout")
def which_method_holdout(data: dict) -> str:
    """With a noisy hold-out split (``--holdout``): per noise level, each method's final, selected and best test
    accuracy, mean over the data sets and models."""
    runs = _group(data["rows"], lambda r: (_noise_label(r), r["method"]))
    rows = []
    for label in dict.fromkeys(k[0] for k in runs):
        rows.append([label, *(" / ".join(f"{100 * _mean(runs[(label, m)], k):.1f}" for k in ("final", "selected", "best"))
                              for m in data["methods"])])
    n = len({(r["dataset"], r["model"]) for r in data["rows"]})
    return _table(["label noise", *(METHOD_NAMES[m] for m in data["methods"])], rows) + (
        f"\n\nFinal / selected / best test accuracy (%), mean over {n} data sets and models and seeds "
        f"{', '.join(map(str, data['seeds']))}, each run holding out a share of its training set "
        "(the command below) with its noisy labels; selected: the test accuracy of the epoch with the best "
        "accuracy on that hold-out split.")


# --------------------------------------------------------------------------------------------- memorisation

@_rendered("memorisation")
def memorisation_candidates(data: dict) -> str:
    """Each method and candidate setting on the validation splits: clean labels, then 80 % noise."""
    runs = _group(data["rows"], lambda r: (r["variant"], r["noise_rate"]))
    ce = {(r["dataset"], r["model"], r["seed"]): r["final"] for r in runs[("ce", 0.0)]}
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in data["rows"]):
        clean, noisy = runs[(variant, 0.0)], runs[(variant, 0.8)]
        worst = min(r["final"] - ce[(r["dataset"], r["model"], r["seed"])] for r in clean)
        drops = [r["best"] - r["final"] for r in noisy]
        rows.append([variant, f"{100 * _mean(clean, 'final'):.1f}", f"{100 * worst:+.1f}",
                     f"{100 * _mean(noisy, 'best'):.1f}", f"{100 * _mean(noisy, 'final'):.1f}",
                     f"{100 * sum(drops) / len(drops):.1f}", f"{100 * max(drops):.1f}"])
    head = ["method or setting", "0 %: final", "0 %: worst vs CE", "80 %: best", "80 %: final", "80 %: drop",
            "80 %: largest drop"]
    n = len({(r["dataset"], r["model"]) for r in data["rows"]})
    return _table(head, rows) + (
        f"\n\nHeld-out accuracy (%, true labels of 20 % of each training set), mean over {n} data sets and models, "
        f"seed{'s' if len({r['seed'] for r in data['rows']}) > 1 else ''} "
        f"{', '.join(map(str, sorted({r['seed'] for r in data['rows']})))}; worst vs CE: the lowest final minus CE's "
        "on the same data; drop: best minus final.")


@_rendered("memorisation")
def memorisation_estimates(data: dict) -> str:
    """The share of wrong labels flag estimates from each CE run, on clean and on noisy training labels."""
    cells = _group(data["estimates"], lambda r: (r["dataset"], r["model"], r["noise_rate"]))
    rates = sorted({r["noise_rate"] for r in data["estimates"]})
    rows = [[dataset, model, *[f"{100 * _mean(cells[(dataset, model, rate)], 'estimated'):.0f} "
                                f"({100 * _mean(cells[(dataset, model, rate)], 'wrong'):.0f})" for rate in rates]]
            for dataset, model in dict.fromkeys(k[:2] for k in cells)]
    head = ["data set", "model", *[f"{100 * rate:.0f} % noise: estimated (true) % wrong" for rate in rates]]
    seeds = sorted({r["seed"] for r in data["estimates"]})
    return _table(head, rows) + (
        "\n\nThe share of training labels that `curriculoss flag`'s default score (AUM over the early-learning "
        "epochs) counts as wrong in the CE run of each cell, against the share that is wrong; "
        f"{'mean over seeds' if len(seeds) > 1 else 'seed'} {', '.join(map(str, seeds))}.")


@_rendered("memorisation")
def memorisation_trace(data: dict) -> str:
    """The trace: per method and epoch, who carries the gradient and how many wrong labels are fitted."""
    rows = []
    for method, trace in data["trace"].items():
        for r in trace:
            if r["epoch"] == 1 or r["epoch"] % 10 == 0:
                rows.append([METHOD_NAMES[method], r["epoch"], f"{100 * r['held_out']:.1f}",
                             f"{r['weight_wrong']:.2f} / {r['weight_right']:.2f}", f"{100 * r['wrong_share']:.0f}",
                             f"{100 * r['wrong_fitted']:.0f}"])
    head = ["method", "epoch", "held-out accuracy (%)", "median weight, wrong / right labels",
            "gradient carried by wrong labels (%)", "wrong labels fitted (%)"]
    return _table(head, rows) + (
        f"\n\n{data['trace_dataset']}, 80 % symmetric noise. A sample's weight is the factor its method puts on "
        "cross-entropy's logit gradient (IMAE: the weight of its unit-norm direction); a wrong label is fitted when "
        "the network gives it a probability above 0.5.")


# --------------------------------------------------------------------------------------------- reproductions

_VERDICT = re.compile(r"^\| \[(?P<name>[\w-]+)\]\(#[\w-]+\) \| (?P<verdict>[^|]+) \|$", re.M)


def reproductions() -> str:
    """The verdicts of the two generated reproduction documents, side by side."""
    docs = {"digits (MLP)": ROOT / "docs" / "reproduction.md",
            "MNIST, 10,000 images (LeNet-5)": ROOT / "docs" / "mnist" / "reproduction.md"}
    verdicts = {label: {m["name"]: m["verdict"].strip() for m in _VERDICT.finditer(path.read_text(encoding="utf-8"))}
                for label, path in docs.items()}
    names = list(dict.fromkeys(n for v in verdicts.values() for n in v))
    rows = [[f"`{n}`", *[verdicts[label].get(n, "not run") for label in docs]] for n in names]
    return _table(["claim", *docs], rows)


TABLES = {
    "headline": headline,
    "main-job": main_job,
    "held-accuracy": held_accuracy,
    "defaults-grid": defaults_grid,
    "defaults-grid-100": defaults_grid_100,
    "flag-summary": flag_summary,
    "flag-mnist": flag_mnist,
    "flag-blobs": flag_blobs,
    "flag-scores": flag_scores,
    "flag-scores-worst": flag_scores_worst,
    "flag-scale": flag_scale,
    "flag-scale-mnist": flag_scale_mnist,
    "overhead": overhead,
    "step": step,
    "lambertw": lambertw,
    "detection": detection,
    "data-parameters": data_parameters,
    "distributed": distributed,
    "reproductions": reproductions,
    "superloss-collapse": superloss_collapse,
    "which-method": which_method,
    "which-method-summary": which_method_summary,
    "which-method-holdout": which_method_holdout,
    "memorisation-candidates": memorisation_candidates,
    "memorisation-trace": memorisation_trace,
    "memorisation-estimates": memorisation_estimates,
}


def render_text(text: str, cache: dict | None = None) -> str:
    """``text`` with every marked table re-rendered from its result file."""
    cache = {} if cache is None else cache

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"no renderer for table {name!r} (known: {', '.join(TABLES)})")
        if name not in cache:
            cache[name] = TABLES[name]().rstrip("\n") + "\n"
        return m.group("open") + cache[name] + m.group("close")

    return MARKER.sub(sub, text)


def render_all(write: bool) -> list[Path]:
    """Render every document; return the ones whose tables differ (rewritten when ``write``)."""
    changed, cache = [], {}
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = render_text(text, cache)
        if new != text:
            changed.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return changed


# --------------------------------------------------------------------------------------------- import-bench

def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _write_imported(out: Path, benchmark: str, data: dict, cmd: str, wall_seconds: float | None,
                    load_before: list[float] | None, made: Path, figure: Path | None, figure_from: Path) -> None:
    """Write an imported result file: ``data`` with the command, this machine, and as its date the time
    ``made`` was last written; copy ``figure_from`` to ``figure`` where both are given."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import _clean, machine

    finished = datetime.datetime.fromtimestamp(made.stat().st_mtime, datetime.timezone.utc)
    import torch  # noqa: F401  (its version goes into the machine description)

    info = machine()
    if load_before:
        info["load_average"] = {"before": load_before}
    record = {"benchmark": benchmark, "command": cmd, "machine": info,
              "date": finished.strftime("%Y-%m-%dT%H:%M:%SZ"), "transcribed": False,
              **({"wall_seconds": round(wall_seconds, 1)} if wall_seconds else {}),
              "data": _clean(data)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if figure is not None and figure_from.exists():
        shutil.copyfile(figure_from, figure)
    print(f"wrote {out}" + (f" and {figure}" if figure else ""))


def import_bench(folder: Path, out: Path, cmd: str, wall_seconds: float | None, figure: Path | None,
                 load_before: list[float] | None = None) -> None:
    """A `curriculoss bench` grid folder (grid.json, summary.csv) -> a result file."""
    grid = json.loads((folder / "grid.json").read_text(encoding="utf-8"))
    with open(folder / "summary.csv", newline="") as fh:
        summary = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    _write_imported(out, "main-job", {"grid": grid, "summary": summary}, cmd, wall_seconds, load_before,
                    folder / "summary.csv", figure, folder / "summary.png")


def import_probe(csv_path: Path, out: Path, cmd: str, wall_seconds: float | None, figure: Path | None,
                 load_before: list[float] | None = None) -> None:
    """The probe.csv of benchmarks/probes/superloss_collapse.py -> a per-seed summary result file."""
    import math
    import statistics

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    num = lambda v: float(v) if v not in ("", None) else math.nan  # noqa: E731
    seeds = []
    for seed in dict.fromkeys(r["seed"] for r in rows):
        run = {v: [r for r in rows if r["variant"] == v and r["seed"] == seed] for v in ("ce", "paper", "normalised")}
        paper = run["paper"]
        peak = max(paper, key=lambda r: num(r["batch_loss"]))
        before = [r for r in paper if 10 <= int(r["step"]) < int(peak["step"])] or paper[:1]
        seeds.append({
            "seed": int(seed),
            "test_accuracy": {v: num(run[v][-1]["test_acc"]) for v in run},
            "largest_batch_loss": num(peak["batch_loss"]), "largest_batch_loss_step": int(peak["step"]),
            "cap_share_before": statistics.median(num(r["cap_share"]) for r in before),
            "mean_sigma_before": statistics.median(num(r["mean_sigma"]) for r in before),
            "tau_max": max(num(r["tau"]) for r in paper),
            "grad_norm_max": {v: max(num(r["grad_norm"]) for r in run[v]) for v in ("ce", "paper")},
        })
    epochs = 1 + max(int(r["epoch"]) for r in rows)
    data = {"model": "lenet-torchinit", "limit": 10_000, "lr": 0.1, "batch_size": 64, "epochs": epochs, "seeds": seeds}
    _write_imported(out, "superloss-collapse", data, cmd, wall_seconds, load_before, csv_path, figure,
                    csv_path.parent / "superloss-collapse.png")


#: The import commands: name -> (function, its source argument and help, defaults of --out, --figure, --command).
IMPORTS = {
    "import-bench": (import_bench, ("folder", "the --out folder of a finished `curriculoss bench`"),
                     {"out": RESULTS / "main-job.json", "figure": RESULTS / "main-job.png", "command": "curriculoss bench"}),
    "import-probe": (import_probe, ("csv", "OUT/probe.csv of benchmarks/probes/superloss_collapse.py"),
                     {"out": RESULTS / "superloss-collapse.json",
                      "figure": ROOT / "docs" / "superloss-collapse" / "superloss-collapse.png",
                      "command": "OMP_NUM_THREADS=1 python benchmarks/probes/superloss_collapse.py MNIST_DIR"}),
}


def import_command(argv: list[str]) -> int:
    """``import-bench`` or ``import-probe`` (``argv[0]``) with its arguments."""
    run, (source_arg, source_help), defaults = IMPORTS[argv[0]]
    p = argparse.ArgumentParser(prog=f"render_tables.py {argv[0]}", description=run.__doc__)
    p.add_argument(source_arg, type=Path, help=source_help)
    p.add_argument("--out", type=Path, default=defaults["out"])
    p.add_argument("--figure", type=Path, default=defaults["figure"], help="where to copy the figure")
    p.add_argument("--command", default=defaults["command"], help="the command that made the source")
    p.add_argument("--wall-seconds", type=float, help="its wall time")
    p.add_argument("--load-before", type=float, nargs=3, help="the load average when it started (1, 5, 15 min)")
    a = p.parse_args(argv[1:])
    run(getattr(a, source_arg), a.out, a.command, a.wall_seconds, a.figure, a.load_before)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in IMPORTS:
        return import_command(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its result file")
    a = p.parse_args(argv)
    changed = render_all(write=not a.check)
    for path in changed:
        print(f"{'differs' if a.check else 'rendered'}: {path.relative_to(ROOT)}")
    return 1 if a.check and changed else 0

if __name__ == "__main__":
    sys.exit(main())
