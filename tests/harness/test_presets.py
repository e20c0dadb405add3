"""curriculoss.harness.presets: the verdicts of the reproductions."""
import math

from curriculoss.harness.presets import verdict_better


def test_a_diverged_baseline_is_beaten_by_a_finite_method():
    rule = verdict_better(["l2"], ["sl"], 0.0, "final", True)
    cells = {("l2", 0.8): [{"final": math.nan}, {"final": 1.0}], ("sl", 0.8): [{"final": 2.0}, {"final": 2.0}]}
    assert rule(cells)[0] == "reproduced"
    cells[("sl", 0.8)][0]["final"] = math.nan  # a diverged method never wins
    assert rule(cells)[0] == "not reproduced"
