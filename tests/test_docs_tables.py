"""The documentation's result tables are rendered from the committed result files, never typed.

``benchmarks/render_tables.py`` renders every table between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->`` in README.md and docs/ from ``docs/results/*.json``; these tests check that
doing so changes nothing, and that every result file says how its figures were measured.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _load_renderer():
    path = ROOT / "benchmarks" / "render_tables.py"
    spec = importlib.util.spec_from_file_location("render_tables", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_tables", module)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()
DOCUMENTS = [p for p in render.documents() if render.MARKER.search(p.read_text(encoding="utf-8"))]
OPENERS = re.compile(r"<!-- table:([\w.-]+) -->")
CLOSERS = re.compile(r"<!-- /table:([\w.-]+) -->")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_readme_has_the_main_tables():
    names = set(OPENERS.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert {"main-job", "held-accuracy", "flag-summary", "overhead"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=_rel)
def test_markers_pair_up(path):
    text = path.read_text(encoding="utf-8")
    opened, closed = OPENERS.findall(text), CLOSERS.findall(text)
    assert opened == closed, f"{_rel(path)}: unmatched table markers {opened} / {closed}"
    assert len(render.MARKER.findall(text)) == len(opened), f"{_rel(path)}: a table marker is not on its own line"
    unknown = set(opened) - set(render.TABLES)
    assert not unknown, f"{_rel(path)}: no renderer for {sorted(unknown)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=_rel)
def test_tables_are_rendered_from_the_result_files(path):
    text = path.read_text(encoding="utf-8")
    rendered = render.render_text(text)
    if rendered != text:
        import difflib

        diff = "".join(difflib.unified_diff(text.splitlines(True), rendered.splitlines(True), _rel(path), "rendered", n=1))
        pytest.fail(f"{_rel(path)} differs from its result files; run `python benchmarks/render_tables.py`:\n{diff[:4000]}")


def test_every_table_is_used_and_not_empty():
    used = {name for path in DOCUMENTS for name in OPENERS.findall(path.read_text(encoding="utf-8"))}
    assert used == set(render.TABLES), f"renderers without a table in the documents: {sorted(set(render.TABLES) - used)}"
    for name in render.TABLES:
        assert render.TABLES[name]().strip(), name


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_result_files_say_how_they_were_measured(path):
    record = json.loads(path.read_text(encoding="utf-8"))
    for key in ("benchmark", "command", "machine", "date", "transcribed", "data"):
        assert key in record, f"{path.name}: no {key!r}"
    assert isinstance(record["transcribed"], bool)
    assert re.match(r"\d{4}-\d{2}-\d{2}", record["date"]), f"{path.name}: date {record['date']!r}"
    assert record["command"].split()[0] in {"python", "curriculoss"} or "=" in record["command"].split()[0]
    assert "cpu" in record["machine"] or "gpu" in record["machine"]
    assert "../" not in record["command"] and not re.search(r"(^|\s)/(?!tmp/)", record["command"]), \
        f"{path.name}: the command names a folder outside the repository: {record['command']}"
    scripts = [word for word in record["command"].split() if word.endswith(".py")]
    missing = [s for s in scripts if not (RESULTS.parents[1] / s).is_file()]
    assert not missing, f"{path.name}: the command runs scripts the repository does not have: {missing}"
    if record["transcribed"]:
        assert record.get("transcribed_from"), f"{path.name}: a transcribed file must say where from"


def test_every_rendered_table_says_how_it_was_measured():
    for name, fn in render.TABLES.items():
        if name in ("reproductions", "headline"):  # the documents state their commands; the main job's table below its headline
            continue
        out = fn()
        assert "*Measured with*" in out or "*Transcribed from" in out, name


def test_main_job_is_what_the_bench_prints():
    """The main job's file holds the summary `curriculoss bench` writes (summary.csv), row for row."""
    record = json.loads((RESULTS / "main-job.json").read_text(encoding="utf-8"))
    assert not record["transcribed"]
    assert record["command"].startswith("curriculoss bench")
    grid, summary = record["data"]["grid"], record["data"]["summary"]
    assert {(s["method"], s["noise_rate"]) for s in summary} == \
        {(m, r) for m in grid["methods"] for r in grid["noise_rates"]}
    assert all(s["seeds"] == len(grid["seeds"]) for s in summary)


def test_check_mode_agrees(capsys):
    assert render.main(["--check"]) == 0, capsys.readouterr().out
