"""`curriculoss reproduce`: every preset runs end to end on a tiny scale and writes its report."""
import re

import pytest

from curriculoss.cli import main
from curriculoss.reproduce import PRESETS, assemble, run_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_writes_report_with_table_and_verdict(tmp_path, name):
    report = run_preset(name, quick=True, out=tmp_path, seeds=(0,), progress=False,
                        overrides={"epochs": 2, "limit": 200})
    text = report.read_text()
    assert re.search(r"\*\*Verdict: (reproduced|partly reproduced|not reproduced)\.\*\*", text)
    for label in PRESETS[name].variants:
        assert f"| {label} |" in text or f"- {label}:" in text
    assert "±" in text and "curriculoss reproduce " + name in text
    assert (report.parent / "plot.png").exists()
    docs = tmp_path / "docs" / "reproduction.md"
    assemble([report], docs)
    assert "reproduction/" in docs.read_text() and (docs.parent / "reproduction").is_dir()


def test_finished_cells_are_not_recomputed(tmp_path):
    kw = dict(quick=True, out=tmp_path, seeds=(0,), progress=False, overrides={"epochs": 1, "limit": 150})
    run_preset("data-params-random", **kw)
    cell = next(tmp_path.rglob("results.json"))
    stamp = cell.stat().st_mtime_ns
    run_preset("data-params-random", **kw)
    assert cell.stat().st_mtime_ns == stamp


def test_unknown_preset_and_missing_data_dir_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "no-such-claim"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file"):
        main(["reproduce", "imae-table2", "--data-dir", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="preset must be one of"):
        run_preset("nope", out=tmp_path)
