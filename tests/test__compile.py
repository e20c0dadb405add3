"""curriculoss._compile: the fused paths run compiled where a compiler works and fall back to eager
(`None`) where it does not, as the docstrings promise. The compiler is replaced by stand-ins here; the
real compiled paths are compared with eager ones in `test_speed.py`."""
import pytest
import torch

from curriculoss import _compile


@pytest.fixture
def fake_device(monkeypatch):
    """A device type of its own, so that what these tests record in `BROKEN` stays here."""
    monkeypatch.setattr(_compile, "BROKEN", set())
    return "fake"


def test_a_working_graph_gives_its_result(monkeypatch, fake_device):
    calls = []
    monkeypatch.setattr(_compile, "compiled", lambda fn, dynamic: lambda *a: calls.append(dynamic) or fn(*a) + 1)
    assert _compile.call_compiled(lambda x: x * 2, False, fake_device, 3) == 7
    assert calls == [False]


def test_a_failing_graph_marks_the_device_broken_and_is_not_tried_again(monkeypatch, fake_device):
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_compile, "compiled", lambda fn, dynamic: broken)
    assert _compile.call_compiled(lambda x: x, True, fake_device, 1) is None
    assert _compile.BROKEN == {fake_device}
    assert _compile.call_compiled(lambda x: x, True, fake_device, 1) is None
    assert len(calls) == 1


def test_no_compiler_is_eager(monkeypatch, fake_device):
    monkeypatch.setattr(_compile, "compiled", lambda fn, dynamic: None)
    assert _compile.call_compiled(lambda x: x, True, fake_device, 1) is None
    assert _compile.BROKEN == set()  # nothing failed: a later call tries again


def test_mark_dynamic_skips_none():
    _compile.mark_dynamic(None, torch.zeros(2, 3), None)
