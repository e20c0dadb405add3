"""The package's layering: the library (losses, data parameters, noise, flagging) never imports the
training harness (``curriculoss.harness``), and every module sits on one side or the other."""
import pkgutil
import subprocess
import sys

import curriculoss
import curriculoss.harness


#: The library's modules, at the top level of the package.
LIBRARY = ("_checks", "_compile", "_lambertw", "_loss", "_sparse", "_superloss", "_superloss_state", "contrastive",
           "data_parameters", "distributed", "flag", "focal", "gce", "imae", "indexed", "integrations", "lambertw", "mae",
           "noise", "recorder", "sce", "signals", "superloss")


#: The harness's modules and sub-packages.
HARNESS = ("arguments", "augment", "bench", "checkpoint", "cli", "commands", "config", "configfile", "data", "devices",
           "divergence", "epoch", "flagging", "methods", "models", "plots", "presets", "progress", "reproduce",
           "runfolder", "runlock", "schedule", "train")


def test_every_module_is_library_or_harness():
    top = {m.name for m in pkgutil.iter_modules(curriculoss.__path__)} - {"__main__"}
    assert top == set(LIBRARY) | {"harness"}, "a new top-level module: add it to LIBRARY here (or move it to harness/)"
    harness = {m.name for m in pkgutil.iter_modules(curriculoss.harness.__path__)}
    assert harness == set(HARNESS)


def test_library_never_imports_the_harness():
    # A fresh interpreter: in this one the other tests have long imported the harness.
    code = ("import sys\n"
            f"for m in {LIBRARY!r}:\n"
            "    __import__('curriculoss.' + m)\n"
            "import curriculoss\n"
            "bad = sorted(m for m in sys.modules if m == 'curriculoss.harness' or m.startswith('curriculoss.harness.'))\n"
            "assert 'curriculoss.superloss' in sys.modules\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_version_is_written_once():
    """`pyproject.toml` reads it from the package; the citation file, which cannot, must agree."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert 'dynamic = ["version"]' in (root / "pyproject.toml").read_text()
    assert f"version: {curriculoss.__version__}\n" in (root / "CITATION.cff").read_text()
    assert f"## {curriculoss.__version__} " in (root / "CHANGELOG.md").read_text()
