"""The documentation site: it builds strictly, offline, every public name has an API reference entry,
every page is in the nav, and the docstrings read as Markdown (no Sphinx roles) in `help()` too."""
from __future__ import annotations

import ast
import inspect
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import curriculoss

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SPHINX = re.compile(r":(?:math|class|func|meth|mod|data|attr|obj|exc):`|^\s*\.\. \w+::|(?<!`)``(?!`)", re.M)
# The library modules whose docstrings are written for the site (Google style, Markdown, $math$).
MODULES = ["curriculoss", "curriculoss.superloss", "curriculoss.lambertw", "curriculoss.data_parameters",
           "curriculoss.imae", "curriculoss.mae", "curriculoss.gce", "curriculoss.sce", "curriculoss.focal",
           "curriculoss.contrastive", "curriculoss.noise", "curriculoss.recorder", "curriculoss.indexed",
           "curriculoss.distributed", "curriculoss.checks"]
INTEGRATIONS = ["lightning", "transformers"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`mkdocs build --strict` into a temporary folder: (exit status, log, site folder)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONWARNINGS="ignore")
    # The build must not need the network: any request goes to a closed local port and fails.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[key] = "http://127.0.0.1:9"
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr, out


def _problems(log: str) -> list[str]:
    """The WARNING and ERROR lines of a build log, with the lines that continue them."""
    lines, keep = [], False
    for line in log.splitlines():
        if re.match(r"(WARNING|ERROR)\b", line):
            lines.append(line.strip())
            keep = True
        elif keep and line.startswith((" ", "\t")) and line.strip():
            lines.append("    " + line.strip())
        else:
            keep = False
    return lines


def test_site_builds_strictly(site):
    code, log, _ = site
    problems = _problems(log)
    assert code == 0, (
        f"mkdocs build --strict failed (exit {code}) with {len(problems)} warning(s)/error(s); a warning "
        "names the page (docs/...md) or the docstring (src/...py:line) to fix:\n  "
        + "\n  ".join(problems or log.splitlines()[-30:]))


def test_every_page_is_in_the_nav(site):
    _, log, _ = site
    match = re.search(r'not included in the "nav" configuration:\n((?:\s+- .*\n?)+)', log)
    missing = re.findall(r"- (\S+)", match.group(1)) if match else []
    assert not missing, ("pages under docs/ that mkdocs.yml's nav does not list (add them to nav, or to "
                         f"not_in_nav if they are fragments of another page): {missing}")


def _anchors(site_dir: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site_dir / "api").rglob("*.html"):
        ids.update(re.findall(r'id="(curriculoss[\w.]*)"', page.read_text(encoding="utf-8")))
    return ids


def _public_names() -> dict[str, set[str]]:
    """Every public name the API reference must document -> the anchors that would document it."""
    names: dict[str, set[str]] = {}
    for name in curriculoss.__all__:
        module = getattr(getattr(curriculoss, name), "__module__", "curriculoss")
        names[f"curriculoss.{name}"] = {f"curriculoss.{name}", f"{module}.{name}"}
    for sub in INTEGRATIONS:
        path = ROOT / "src" / "curriculoss" / "integrations" / f"{sub}.py"
        if not path.exists():
            continue
        # Read __all__ without importing the module (which imports lightning / transformers).
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                for name in ast.literal_eval(node.value):
                    full = f"curriculoss.integrations.{sub}.{name}"
                    names[full] = {full}
    return names


def test_every_public_name_has_an_api_entry(site):
    anchors = _anchors(site[2])  # the site's folder
    assert anchors, "the build wrote no API reference page under site/api/"
    missing = [name for name, ids in _public_names().items() if not ids & anchors]
    assert not missing, (f"public names without an API reference entry: {missing}; add a "
                         "`::: <name>` directive to a page under docs/api/")


def test_api_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(DOCS).as_posix() for p in (DOCS / "api").glob("*.md"))
    assert pages and all(page in nav for page in pages), pages


def _own_help(obj) -> str:
    """`help(obj)` as text, up to the members it inherits (torch's own docstrings use Sphinx roles)."""
    return pydoc.plain(pydoc.render_doc(obj)).split("inherited from")[0]


@pytest.mark.parametrize("name", curriculoss.__all__)
def test_help_has_no_sphinx_markup(name):
    text = _own_help(getattr(curriculoss, name))
    found = sorted({m.group(0).strip() for m in SPHINX.finditer(text)})
    assert not found, f"help(curriculoss.{name}) shows Sphinx markup {found}; the docstrings use Markdown"


@pytest.mark.parametrize("module", MODULES)
def test_module_docstrings_have_no_sphinx_markup(module):
    mod = sys.modules.get(module) or __import__(module, fromlist=["_"])
    docs = {module: inspect.getdoc(mod) or ""}
    for name, obj in vars(mod).items():
        if getattr(obj, "__module__", None) != module or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        docs[f"{module}.{name}"] = obj.__doc__ or ""
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                member = getattr(member, "fget", None) or getattr(member, "__func__", member)
                docs[f"{module}.{name}.{attr}"] = getattr(member, "__doc__", None) or "" if callable(member) else ""
    bad = {where: sorted({m.group(0).strip() for m in SPHINX.finditer(doc)})
           for where, doc in docs.items() if SPHINX.search(doc)}
    assert not bad, f"docstrings with Sphinx markup (use `code`, $math$, [`Name`][curriculoss.Name]): {bad}"
