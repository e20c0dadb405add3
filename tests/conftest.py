"""Shared fixtures.

The device and the floating dtype of the tensor tests are chosen on the command line, so the same
suite runs on a GPU when one is there::

    pytest --device cuda --dtype float32

Tests marked ``slow`` (longer than CI's budget allows) run only with ``--run-slow``.

The tests mirror the source tree: ``src/curriculoss/a/b.py`` is tested in ``tests/a/test_b.py``, a
package's ``__init__.py`` in ``test___init__.py`` where it holds logic of its own (``test_layout.py``
checks it). The files at the top level that test no single module are cross-cutting: the documentation
(``test_docs.py``, ``test_docs_tables.py``, ``test_words.py``), the examples (``test_examples.py``,
``test_own_loop.py``), the defaults shared by the command line and the library (``test_defaults.py``),
the operation budgets and fused paths (``test_speed.py``), the test template run over the four baseline
losses (``test_baselines.py``) and the layering (``test_layout.py``). Plain helpers shared by several
files are in ``_helpers.py``; the fixtures of a folder's tests in its ``conftest.py``.
"""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for the tensor tests (cpu, cuda, cuda:1, ...)")
    parser.addoption(
        "--dtype", default="float64", choices=["float32", "float64"],
        help="floating dtype for the tests that are not tied to one dtype",
    )
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow (minutes; not in CI)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture(scope="module")
def dtype(request) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture
def one_thread():
    """One intra-op thread: the tests' matrices are too small for two to pay, and the suite often shares the
    machine's cores with other jobs (oversubscribed threads made a 3 s run take 15 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
