"""curriculoss.integrations: a missing framework names the extra to install."""
import importlib
import sys

import pytest


@pytest.mark.parametrize("module, missing, extra", [
    ("curriculoss.integrations.transformers", ("transformers",), "huggingface"),
    ("curriculoss.integrations.lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "lightning"),
])
def test_a_missing_framework_names_the_extra(monkeypatch, module, missing, extra):
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # import refused, as when not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    message = rf'needs {missing[0]}, which is not installed: pip install "curriculoss\[{extra}\]"'
    with pytest.raises(ImportError, match=message):
        importlib.import_module(module)
