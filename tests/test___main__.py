"""curriculoss.__main__: `python -m curriculoss` is the command line."""
import subprocess
import sys

import curriculoss
import curriculoss.harness


def test_module_entry_point_matches_console_script():
    proc = subprocess.run([sys.executable, "-m", "curriculoss", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "bench" in proc.stdout and "train" in proc.stdout


def test_python_m_curriculoss_runs_the_harness_cli():
    proc = subprocess.run([sys.executable, "-m", "curriculoss", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert curriculoss.__version__ in proc.stdout
