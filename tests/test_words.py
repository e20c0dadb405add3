"""The repository describes what the software does now, not how it was made.

No tracked (or untracked, not ignored) text file may speak of the work that produced it: its
stages, meetings or ticket numbers, or point to folders outside the repository. The rule is one
case-insensitive regular expression, the same as

    grep -rniE "<PATTERN>" $(git ls-files)

over every text file but CHANGELOG.md (history belongs there, by version) and .ci/. Each offending
line is printed as ``file:line: text``.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Written in pieces so that this file does not match itself.
PATTERN = re.compile("|".join([
    "this" + " stop",
    "previous" + " stop",
    "stop" + " [0-9]",
    "sess" + "ion",
    "issue" + " [0-9]",
    r"(^|[ (])#[0-9]+\b",
    r"\.\./" + "shared",
]), re.IGNORECASE)

#: Never scanned: the history file, CI's scripts, and what builds and tools write.
SKIP_FILES = {"CHANGELOG.md"}
SKIP_DIRS = {".git", ".ci", "build", "dist", "site", "runs", "__pycache__", ".pytest_cache", ".hypothesis",
             ".venv", "venv", ".mypy_cache", ".ruff_cache", "node_modules"}


def _listed_files() -> list[str]:
    """Tracked files plus untracked, not ignored ones (git), or a walk of the tree without git."""
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        untracked = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT,
                                   capture_output=True, check=True).stdout
        names = {n for n in (tracked + untracked).decode("utf-8", "surrogateescape").split("\0") if n}
    except (OSError, subprocess.CalledProcessError):
        names = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()}
    return sorted(names)


def _scanned(name: str) -> bool:
    parts = Path(name).parts
    if name in SKIP_FILES or any(part in SKIP_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
        return False
    return (ROOT / name).is_file()


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images, archives)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def offending_lines() -> list[str]:
    hits = []
    for name in _listed_files():
        if not _scanned(name):
            continue
        text = _text(ROOT / name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if PATTERN.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:160]}")
    return hits


def test_pattern_is_the_documented_one():
    for bad in ["this" + " stop", "the Previous" + " Stop", "stop" + " 23", "a work sess" + "ion", "issue" + " 18",
                "see #" + "12", "(#" + "3)", "../" + "shared/datasets"]:
        assert PATTERN.search(bad), bad
    for fine in ["tissue", "#include", "a#1", "shared memory", "stop-on-divergence", "issues: 4"]:
        assert not PATTERN.search(fine), fine


def test_no_history_words():
    hits = offending_lines()
    assert not hits, ("text that speaks of how the project was made, or of folders outside it "
                      f"({len(hits)} lines):\n" + "\n".join(hits))
