"""curriculoss.harness.bench: a grid of runs, its rates and its summary table."""
import csv

import pytest

from curriculoss.harness.bench import format_table, memorisation_gaps, summarise
from curriculoss.harness.cli import main

from _helpers import TINY, TINY64


def test_bench_grid_summary_and_resume(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["bench", *TINY, "--methods", "ce", "superloss", "--noise-rates", "0", "0.4", "--seeds", "0", "1",
            "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| superloss | 40% |" in printed and "| ce | 0% |" in printed
    for name in ("summary.md", "summary.csv", "summary.png", "grid.json"):
        assert (out / name).exists(), name
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["seeds"] == "2" for r in rows)
    # finished cells are not recomputed
    stamp = (out / "ce" / "rate0.4" / "seed1" / "results.json").stat().st_mtime_ns
    assert main(["bench", "--resume", str(out), "--quiet"]) == 0
    assert (out / "ce" / "rate0.4" / "seed1" / "results.json").stat().st_mtime_ns == stamp


def test_noise_rates_that_share_a_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "grid"
    with pytest.raises(SystemExit) as exc:
        main(["bench", *TINY64, "--methods", "ce", "--noise-rates", "0.1", "0.1000001", "--out", str(out)])
    assert str(exc.value).startswith("curriculoss: error: argument --noise-rates: the rates 0.1 and 0.1000001 "
                                     "would share the folder rate0.1")
    assert not out.exists()


def test_bench_table_counts_diverged_cells_and_prints_no_spread_for_one_seed():
    rows = [{"method": "ce", "noise_rate": 0.4, "seed": s, "metric": "accuracy", "best": 0.9, "final": f,
             "seconds": 1.0, "diverged": d} for s, (f, d) in enumerate([(0.8, False), (0.1, True), (0.7, False)])]
    rows.append({"method": "imae", "noise_rate": 0.0, "seed": 0, "metric": "accuracy", "best": 0.5, "final": 0.4,
                 "seconds": 1.0})
    table = format_table(summarise(rows))
    ce = next(line for line in table.splitlines() if line.startswith("| ce"))
    assert "**1/3**" in ce and "53.33 ±" in ce  # the collapsed seed stays in the mean: (80 + 10 + 70) / 3
    imae = next(line for line in table.splitlines() if line.startswith("| imae"))
    assert "± 0.00" not in imae and "(1 seed)" in imae and "0/1" in imae
    assert "40% noise +36.67" in memorisation_gaps(summarise(rows))
