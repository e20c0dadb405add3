"""Every script in examples/ runs (short settings) and prints its result."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: short settings: command-line flags for the scripts that take them, keyword arguments of main() otherwise
SHORT = {
    "regression_digits.py": {"epochs": 3},
    "detection_superloss.py": {"steps": 30},
    "metric_learning_digits.py": {"steps": 30},
    "detection_data_parameters.py": {"epochs": 3},
    "flag_own_loop.py": ["--epochs", "5"],
    "own_loop_digits.py": ["--epochs", "5"],
}


def command(script: str) -> list[str]:
    short = SHORT.get(script, [])
    if isinstance(short, dict):
        call = f"import runpy; runpy.run_path({str(EXAMPLES / script)!r})['main'](**{short!r})"
        return [sys.executable, "-c", call]
    return [sys.executable, str(EXAMPLES / script), *short]


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(script):
    proc = subprocess.run(command(script), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
