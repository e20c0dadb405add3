"""The library in a user's own loop gives what the command line gives.

examples/own_loop_digits.py is a plain PyTorch loop written from docs/own-loop.md with the public API
only; ``curriculoss train`` is the command line, called in-process. For SuperLoss, Data Parameters and
IMAE on the digits at 40 % symmetric noise, the mean final test accuracy over seeds 0, 1, 2 must agree
within 1.5 points, and the two must train on the same noisy labels (the page tells a user how). The
loop follows every setting of the command line (split, noise, MLP, SGD, cosine schedule, batch 64,
30 epochs, the seeded sample order), so on one machine the two runs are in fact identical; the margin
leaves room for a change of either side that does not change what the method does.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from curriculoss.harness import cli
from curriculoss.signals import open_signals

from _helpers import load_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_loop_digits.py"
SEEDS = (0, 1, 2)
TOLERANCE = 0.015  # 1.5 points of test accuracy, on the mean over SEEDS


def _command_line(method: str, seed: int, out: Path) -> float:
    """``curriculoss train`` with its defaults; the final test accuracy from its run folder."""
    assert cli.main(["train", "--method", method, "--noise-rate", "0.4", "--seed", str(seed), "--out", str(out),
                     "--quiet"]) == 0
    final = json.loads((out / "results.json").read_text())["final"]
    rows = (out / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert len(rows) == 31 and float(last[header.index("test_metric")]) == pytest.approx(final)
    return final


@pytest.mark.parametrize("method", ["superloss", "data-params", "imae"])
def test_own_loop_matches_the_command_line(method, tmp_path, one_thread, capsys):
    own_loop = load_example(EXAMPLE)
    own, command = [], []
    for seed in SEEDS:
        result = own_loop.main(["--method", method, "--seed", str(seed), "--noise-rate", "0.4",
                                "--out", str(tmp_path / f"own{seed}")])
        own.append(result["final"])
        command.append(_command_line(method, seed, tmp_path / f"cli{seed}"))
        # The same split and noisy labels for the same seed.
        mine = open_signals(tmp_path / f"own{seed}")
        theirs = open_signals(tmp_path / f"cli{seed}")
        for key in ("labels", "true_labels", "noise_mask"):
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{key}, seed {seed}")
    gap = float(np.mean(own) - np.mean(command))
    with capsys.disabled():
        print(f"\n{method}: own loop {[round(a, 4) for a in own]} mean {np.mean(own):.4f}; command line "
              f"{[round(a, 4) for a in command]} mean {np.mean(command):.4f}; gap {100 * gap:+.2f} points")
    assert abs(gap) <= TOLERANCE, (
        f"{method}: own loop {own} vs curriculoss train {command}: mean gap {100 * gap:+.2f} points; "
        "a default of the command line (lr, schedule, model, method options) or of the library changed: "
        "update examples/own_loop_digits.py and docs/own-loop.md to follow it")
