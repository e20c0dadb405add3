"""The package's layering: the library (losses, data parameters, noise, flagging) never imports the
training harness (``curriculoss.harness``), and every module sits on one side or the other; the tests
mirror the source tree."""
import ast
import pkgutil
import subprocess
import sys

from pathlib import Path

import curriculoss
import curriculoss.harness

ROOT = Path(__file__).resolve().parents[1]


#: The library's modules, at the top level of the package.
LIBRARY = ("_compile", "_lambertw", "_loss", "_sparse", "_superloss", "_superloss_state", "checks", "contrastive",
           "data_parameters", "distributed", "flag", "focal", "gce", "imae", "indexed", "integrations", "lambertw", "mae",
           "noise", "recorder", "sce", "signals", "superloss")


#: The harness's modules and sub-packages.
HARNESS = ("arguments", "augment", "bench", "checkpoint", "cli", "commands", "config", "configfile", "data", "devices",
           "divergence", "epoch", "flagging", "holdout", "methods", "models", "plots", "presets", "progress", "reproduce",
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


def _has_own_logic(init: Path) -> bool:
    """Whether a package's `__init__.py` defines a function or a class (not only imports and names)."""
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               for node in ast.parse(init.read_text()).body)


def mirrored_test(module: Path) -> Path:
    """`src/curriculoss/a/b.py` -> `tests/a/test_b.py` (`__init__.py` -> `test___init__.py`)."""
    relative = module.relative_to(ROOT / "src" / "curriculoss")
    return ROOT.joinpath("tests", *relative.parts[:-1], "test_" + relative.name)


def test_mirrored_test_paths():
    src = ROOT / "src" / "curriculoss"
    assert mirrored_test(src / "superloss.py") == ROOT / "tests" / "test_superloss.py"
    assert mirrored_test(src / "_loss.py") == ROOT / "tests" / "test__loss.py"
    assert mirrored_test(src / "harness" / "data" / "idx.py") == ROOT / "tests" / "harness" / "data" / "test_idx.py"


def test_every_module_has_its_test_file_at_the_mirrored_path():
    """A package's `__init__.py` needs one only where it holds logic of its own (a function or a class)."""
    modules = sorted((ROOT / "src" / "curriculoss").rglob("*.py"))
    assert len(modules) > 50
    missing = [str(mirrored_test(m).relative_to(ROOT)) for m in modules
               if (m.name != "__init__.py" or _has_own_logic(m)) and not mirrored_test(m).is_file()]
    assert not missing, f"modules without a test file at the mirrored path: {missing}"
