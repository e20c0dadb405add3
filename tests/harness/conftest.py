"""Fixtures of the harness's tests: finished tiny run folders, which tests copy before changing them,
and an import state restored after a test that imports a run folder's module."""
import sys
from pathlib import Path

import pytest

from curriculoss.harness.cli import main

from _helpers import TINY64


@pytest.fixture(scope="package")
def finished_runs(tmp_path_factory) -> Path:
    """A folder holding `run`, a finished 2-epoch CE run on 64 digits with 20 % noise, and `grid`, a
    finished one-cell grid of the same (1 epoch); tests change copies of them."""
    root = tmp_path_factory.mktemp("finished")
    assert main(["train", *TINY64, "--noise-rate", "0.2", "--out", str(root / "run")]) == 0
    assert main(["bench", *TINY64, "--epochs", "1", "--methods", "ce", "--noise-rates", "0.2", "--seeds", "0",
                 "--out", str(root / "grid")]) == 0
    return root


@pytest.fixture(scope="package")
def finished_run(finished_runs) -> Path:
    """The finished run of `finished_runs`."""
    return finished_runs / "run"


@pytest.fixture
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop("pwn_mod", None)
