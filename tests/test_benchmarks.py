"""Every benchmark and probe runs: its main path at tiny sizes (seconds), so that none of them can rot.

Each script runs as its documentation says, in a subprocess from ``benchmarks/`` with the repository's
``src`` on ``PYTHONPATH``, one thread; the test checks that it exits 0 and that its result file
(``--json``) holds the figures its table is rendered from. The figures themselves are not checked:
at these sizes they mean nothing. Scripts that need cleanlab, scipy, Pillow or matplotlib are skipped
without them; those that read MNIST run on their built-in or generated data instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
#: Scripts that are not benchmarks: the table renderer (tests/test_docs_tables.py runs it).
NOT_BENCHMARKS = {"render_tables.py"}


def run(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` from benchmarks/, the repository's src first on the path; it must exit 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, script, *args], cwd=BENCHMARKS, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def result(path: Path, benchmark: str, keys: set[str]) -> dict:
    """The data of a result file, which says how it was measured and holds at least ``keys``."""
    record = json.loads(path.read_text(encoding="utf-8"))
    assert {"benchmark", "command", "machine", "date", "transcribed", "data"} <= set(record)
    assert record["benchmark"] == benchmark
    assert record["command"].split()[-2:] == ["--json", str(path)]
    missing = keys - set(record["data"])
    assert not missing, f"{path.name}: no {sorted(missing)} in {sorted(record['data'])}"
    return record["data"]


def measure(tmp_path: Path, script: str, *args: str, benchmark: str, keys: set[str]) -> dict:
    """`run` SCRIPT ARGS --json TMP_PATH/BENCHMARK.json; the data of that result file (see `result`)."""
    out = tmp_path / f"{benchmark}.json"
    run(script, *args, "--json", str(out))
    return result(out, benchmark, keys)


def test_step(tmp_path):
    data = measure(tmp_path, "bench_step.py", "--batch-size", "4", "--repeats", "3", "--processes", "1",
                   "--threads", "1", benchmark="step",
                   keys={"batch_size", "threads", "rounds", "processes", "num_samples", "variants"})
    assert {"ce", "ce_again", "superloss", "dp_instance", "dp_joint", "imae", "floor_weighted", "floor_node"} \
        <= set(data["variants"])
    assert {"step_ms", "ops", "ratio", "low", "high", "goal", "loss_part_us_back_to_back",
            "loss_part_us_after_forward"} <= set(data["variants"]["superloss"])


def test_lambertw(tmp_path):
    pytest.importorskip("scipy")
    data = measure(tmp_path, "bench_lambertw.py", "--size", "1000", "--repeats", "2", "--threads", "1",
                   benchmark="lambertw", keys={"dtype", "threads", "rows"})
    assert len(data["rows"]) == 3
    assert {"input", "variant", "scipy_ms", "ours_ms", "speedup", "low", "high", "ops", "max_abs_difference"} \
        <= set(data["rows"][0])


def test_detection(tmp_path):
    data = measure(tmp_path, "bench_detection.py", "--anchors", "2000", "--classes", "10", "--repeats", "2",
                   "--threads", "1", benchmark="detection",
                   keys={"anchors", "classes", "rounds", "threads", "focal_ms", "ce_ms", "variants"})
    assert {"ms", "ratio", "low", "high", "goal"} <= set(data["variants"]["eager"])


def test_data_parameters(tmp_path):
    data = measure(tmp_path, "bench_data_parameters.py", "--repeats", "2", "--threads", "1",
                   benchmark="data-parameters",
                   keys={"batch_size", "repeats", "threads", "step_ms", "ratios", "goals"})
    assert set(data["step_ms"]) == {"ce", "dp_50k", "dp_60k", "dp_2.4M"}
    assert set(data["ratios"]) == set(data["goals"]) == {"joint_2.4M_over_50k", "joint_60k_over_ce"}


def test_distributed(tmp_path):
    data = measure(tmp_path, "bench_distributed.py", "--batch-size", "16", "--steps", "2", "--repeats", "2",
                   benchmark="distributed", keys={"distributed", "scale"})
    assert set(data["distributed"]["methods"]) == {"superloss", "data-params"}
    assert {"label", "step_ms_1", "step_ms_2", "library_bytes", "ddp_bytes"} \
        <= set(data["distributed"]["methods"]["superloss"])
    assert {"repeats", "step_ms", "ratio", "goal", "memory_mib_10M"} <= set(data["scale"])


def test_epoch(tmp_path):
    data = measure(tmp_path, "bench_epoch.py", "--dataset", "digits", "--limit", "256", "--methods", "ce",
                   "data-params", "--repeats", "2", "--min-repeats", "2", "--threads", "1", benchmark="epoch",
                   keys={"dataset", "train_samples", "batch_size", "rounds", "plain_seconds", "goal", "methods"})
    assert set(data["methods"]) == {"ce", "data-params"}
    assert {"seconds", "ratio", "low", "high"} <= set(data["methods"]["data-params"])


def test_imagefolder(tmp_path):
    pytest.importorskip("PIL")
    data = measure(tmp_path, "bench_imagefolder.py", "--images", "40", "--workers", "0", "1",
                   benchmark="imagefolder", keys={"images", "load_images_per_second", "epoch_seconds"})
    assert set(data["load_images_per_second"]) == {"0", "1"}
    assert set(data["epoch_seconds"]) == {"in memory", "streamed, 0 workers", "streamed, 1 workers"}


def test_defaults_grid(tmp_path):
    """The grid on the built-in digits, then again: the second time every run folder is read back."""
    pytest.importorskip("scipy")  # the rotated digits
    args = ["--only", "digits", "--methods", "ce", "--epochs", "1", "--out", str(tmp_path / "grid")]
    data = measure(tmp_path, "bench_defaults.py", *args, benchmark="defaults-grid",
                   keys={"epochs", "batch_size", "momentum", "weight_decay", "lr", "methods", "noise_rates", "seeds",
                         "rows"})
    assert len(data["rows"]) == 2 * 2  # models x noise rates
    assert {"dataset", "model", "noise_rate", "method", "seed", "best", "final", "diverged", "collapsed"} \
        <= set(data["rows"][0])
    again = run("bench_defaults.py", *args)
    assert "4 runs" in again.stdout


def test_defaults_grid_noise_kinds(tmp_path):
    """Clean labels once, then each noise kind at each positive rate; the rows say which kind."""
    pytest.importorskip("scipy")
    out = tmp_path / "which-method.json"
    run("bench_defaults.py", "--only", "digits", "--methods", "ce", "--epochs", "1", "--noise", "symmetric", "pair",
        "--rates", "0", "0.8", "--out", str(tmp_path / "grid"), "--json", str(out))
    data = result(out, "defaults-grid", {"noise", "noise_rates", "rows"})
    cells = {(r["model"], r["noise"], r["noise_rate"]) for r in data["rows"]}
    assert cells == {(m, n, r) for m in ("mlp", "lenet")
                     for n, r in (("symmetric", 0.0), ("symmetric", 0.8), ("pair", 0.8))}


def test_probe_memorisation(tmp_path):
    """Two methods and one candidate on the tabular set for two epochs; the trace reads their signals."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "memorisation.json"
    schedule = "imae T 8, 16 from epoch 11"
    run("probes/memorisation.py", "--only", "tabular", "--methods", "ce", "superloss", "--candidates",
        "superloss tau=ema", "--schedules", schedule, "--rates", "0.8", "--extra", "--epochs 2", "--jobs", "1",
        "--out", str(tmp_path / "probe"), "--figure", str(tmp_path / "trace.png"), "--json", str(out))
    data = result(out, "memorisation", {"rows", "trace", "trace_dataset", "candidates", "schedules", "estimates"})
    assert {r["variant"] for r in data["rows"]} == {"ce", "superloss", "superloss tau=ema", schedule}
    assert set(data["trace"]) == {"ce", "superloss"} and len(data["trace"]["ce"]) == 2
    (estimate,) = data["estimates"]
    assert 0.0 <= estimate["estimated"] <= 1.0 and 0.6 < estimate["wrong"] < 0.85  # some flips land on the true class
    assert (tmp_path / "trace.png").stat().st_size > 0


def test_probe_memorisation_schedule_reaches_imae(tmp_path, monkeypatch):
    """A temperature schedule sets the run's IMAE each epoch: with T = 8 in the first epoch and 0 in the second,
    the recorded weights are exp(8 p (1 - p)) (p from the recorded MAE), then exactly 1."""
    import numpy as np
    import torch

    from curriculoss.signals import open_signals

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.syspath_prepend(str(BENCHMARKS / "probes"))
    probe = __import__("memorisation")
    monkeypatch.setitem(probe.T_SCHEDULES, "8 then 0", lambda epoch: 8.0 if epoch == 0 else 0.0)
    (dataset, data_dir, _), = probe.grid_data(tmp_path, None, ["tabular"]).values()
    cfg = probe.cli_config(dataset, data_dir, "mlp", "imae", 0.4, 0, ["--epochs", "2"])
    threads = torch.get_num_threads()
    try:
        probe.run_scheduled((cfg, str(tmp_path / "run"), "8 then 0"))
    finally:
        torch.set_num_threads(threads)
    signals = open_signals(tmp_path / "run")
    p = 1.0 - np.asarray(signals["loss"][0], dtype=np.float64) / 2.0
    np.testing.assert_allclose(signals["confidence"][0], np.exp(8.0 * p * (1.0 - p)), rtol=1e-4)
    np.testing.assert_array_equal(signals["confidence"][1], 1.0)


def test_flag_scores(tmp_path):
    data = measure(tmp_path, "bench_flag_scores.py", "--runs", str(tmp_path / "runs"), "--methods", "ce",
                   "--settings", "symmetric:0.4", "--epochs", "2", benchmark="flag-scores",
                   keys={"dataset", "model", "seed", "runs"})
    (row,) = data["runs"].values()
    assert {"method", "noise", "noise_rate", "epochs", "window", "num_samples", "rows"} <= set(row)
    assert {"auroc", "precision_at_k", "estimated_num_issues", "num_noisy"} <= set(row["rows"]["aum, early window"])


def test_flag(tmp_path):
    pytest.importorskip("cleanlab")
    data = measure(tmp_path, "bench_flag.py", "--dataset", "blobs", "--model", "mlp", "--epochs", "1", "--methods",
                   "ce", "--settings", "symmetric:0.4", benchmark="flag",
                   keys={"dataset", "model", "epochs_per_fold", "our_epochs", "folds", "settings"})
    rows = data["settings"]["symmetric:0.4"]
    assert {"ce: aum, early window (default)", "cleanlab 5-fold"} <= set(rows)
    assert {"auroc", "average_precision", "precision_at_k", "estimated_num_issues", "num_noisy", "seconds",
            "sample_epochs"} <= set(rows["cleanlab 5-fold"])


def test_flag_scale(tmp_path):
    pytest.importorskip("cleanlab")
    data = measure(tmp_path, "bench_flag_scale.py", "--sizes", "2000", "--epochs", "4", "--classes", "10",
                   "--threads", "1", "--cleanlab-max", "2000", benchmark="flag-scale",
                   keys={"rows", "noise", "batch"})
    assert {"n", "epochs", "classes", "record_seconds_per_epoch", "record_peak_mb", "record_rss_before_mb",
            "signals_bytes", "flag_seconds", "flag_peak_mb", "auroc", "cleanlab_seconds", "cleanlab_peak_mb"} \
        <= set(data["rows"][0])


def test_probe_bounded_losses(tmp_path):
    pytest.importorskip("scipy")  # the rotated digits
    done = run("probes/bounded_losses.py", "--methods", "ce", "--seeds", "0", "--extra", "--epochs 1", "--jobs", "1",
               "--out", str(tmp_path / "probe"))
    rows = [line for line in done.stdout.splitlines() if line.startswith("| digits")]
    assert len(rows) == 4  # two data sets x two noise rates


def test_probe_superloss_collapse(tmp_path):
    """The probe on the digits, then its log turned into the result file its table is rendered from."""
    pytest.importorskip("matplotlib")
    run("probes/superloss_collapse.py", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path))
    assert (tmp_path / "superloss-collapse.png").stat().st_size > 0
    out = tmp_path / "superloss-collapse.json"
    run("render_tables.py", "import-probe", str(tmp_path / "probe.csv"), "--out", str(out), "--figure",
        str(tmp_path / "figure.png"))
    data = json.loads(out.read_text(encoding="utf-8"))["data"]
    assert {"test_accuracy", "largest_batch_loss", "cap_share_before", "tau_max", "grad_norm_max"} <= set(data["seeds"][0])
    assert set(data["seeds"][0]["test_accuracy"]) == {"ce", "paper", "normalised"}


def test_probe_data_params_joint(tmp_path):
    """The reproduction's joint cell (one epoch): its class sigmas and per-class accuracy are printed."""
    done = run("probes/data_params_joint.py", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert "class sigma: 0:" in done.stdout and "test accuracy by class: 0:" in done.stdout
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def _scripts() -> list[Path]:
    return sorted(p for p in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("probes/*.py")]
                  if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS)


def test_every_script_has_a_smoke_test():
    tested = set()
    for name, fn in globals().items():
        if name.startswith("test_") and fn is not test_every_script_has_a_smoke_test:
            source = fn.__code__.co_consts
            tested |= {c for c in source if isinstance(c, str) and c.endswith(".py")}
    scripts = {str(p.relative_to(BENCHMARKS)) for p in _scripts()}
    assert scripts - tested == set(), f"benchmarks without a smoke test here: {sorted(scripts - tested)}"


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_every_script_opens_with_its_question(path):
    """One script per question: the docstring's first line asks it."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and "?" in doc.splitlines()[0], f"{path.name}: the docstring's first line is not a question"


def test_benchmarks_import_no_private_harness_name():
    import ast

    for path in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("probes/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("curriculoss"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
