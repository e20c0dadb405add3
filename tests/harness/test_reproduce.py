"""`curriculoss reproduce`: every preset runs end to end on a tiny scale and writes its report."""
import json
import math
import re

import numpy as np
import pytest

from curriculoss.harness import data as datasets, reproduce
from curriculoss.harness.cli import main
from curriculoss.harness.reproduce import (HPARAMS_FILE, PRESETS, assemble, load_hparams, run_preset, tune_preset,
                                           validation_split)
from curriculoss.harness.train import TrainConfig, prepare_data


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_writes_report_with_table_and_verdict(tmp_path, name):
    report = run_preset(name, quick=True, out=tmp_path, seeds=(0,), progress=False,
                        overrides={"epochs": 2, "limit": 200})
    text = report.read_text()
    assert re.search(r"\*\*Verdict: (reproduced|partly reproduced|not reproduced)\.\*\*", text)
    for label in PRESETS[name].variants:
        assert f"| {label} |" in text or f"- {label}:" in text
    assert "±" in text and "curriculoss reproduce " + name in text
    assert (report.parent / "plot.png").exists()
    docs = tmp_path / "docs" / "reproduction.md"
    (tmp_path / "docs" / "reproduction-notes").mkdir(parents=True)
    (tmp_path / "docs" / "reproduction-notes" / f"{name}-quick.md").write_text("Because of the reduced scale.")
    assemble([report], docs)
    text = docs.read_text()
    assert "reproduction/" in text and (docs.parent / "reproduction").is_dir()
    assert f"| [{name}-quick](#{name}) |" in text and "Because of the reduced scale." in text


def test_finished_cells_are_not_recomputed(tmp_path):
    kw = dict(quick=True, out=tmp_path, seeds=(0,), progress=False, overrides={"epochs": 1, "limit": 150})
    run_preset("data-params-random", **kw)
    cell = next(tmp_path.rglob("results.json"))
    stamp = cell.stat().st_mtime_ns
    run_preset("data-params-random", **kw)
    assert cell.stat().st_mtime_ns == stamp


def test_unknown_preset_and_missing_data_dir_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "no-such-claim"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file"):
        main(["reproduce", "imae-table2", "--data-dir", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="preset must be one of"):
        run_preset("nope", out=tmp_path)


def test_validation_split_is_carved_from_the_training_set_with_noisy_labels(tmp_path):
    cfg = TrainConfig(dataset="digits", noise_rate=0.4, seed=7)
    path = validation_split(cfg, tmp_path, 0.2)
    split = np.load(path)
    full = datasets.load("digits")
    _, noisy = prepare_data(cfg)
    fit, val = split["train_index"], split["val_index"]
    n = len(full.x_train)
    # a partition of the training set, 20 % held out
    assert len(val) == round(0.2 * n) and len(fit) + len(val) == n
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(n))
    order = np.random.default_rng(7).permutation(n)  # the documented draw, in its order
    np.testing.assert_array_equal(val, order[:len(val)])
    np.testing.assert_array_equal(fit, order[len(val):])
    np.testing.assert_array_equal(split["x"], full.x_train[fit])
    np.testing.assert_array_equal(split["x_test"], full.x_train[val])
    # no test image reaches the selection
    test_rows = {row.tobytes() for row in full.x_test}
    assert not any(row.tobytes() in test_rows for row in split["x_test"])
    # training part: true labels (the harness adds the noise); validation part: noisy labels, ~40 % wrong
    np.testing.assert_array_equal(split["y"], full.y_train[fit])
    np.testing.assert_array_equal(split["y_test"], np.asarray(noisy.labels)[val])
    wrong = (split["y_test"] != full.y_train[val]).mean()
    assert 0.3 < wrong < 0.5


def _fake_train(score):
    """A stand-in for training: the final figure is ``score(cfg)``; records the configurations seen."""
    seen = []

    def train(cfg, run_dir=None, **kw):
        seen.append(cfg)
        results = {"best": score(cfg), "final": score(cfg), "metric": "accuracy", "seconds": 0.0}
        (run_dir / "results.json").write_text(json.dumps(results))
        return results
    return train, seen


def _record_cells(monkeypatch, tmp_path) -> list:
    """`run_preset` with training, extras and the report stubbed out: the configurations it trains."""
    fake, seen = _fake_train(lambda cfg: 0.5)
    monkeypatch.setattr(reproduce, "train", fake)
    monkeypatch.setattr(reproduce, "_extras", lambda folder, label: {})
    monkeypatch.setattr(reproduce, "_report", lambda *a: tmp_path / "report.md")
    return seen


def test_selection_takes_the_best_finite_mean_and_passes_the_base_lr_on(tmp_path, monkeypatch):
    def score(cfg):
        if cfg.method == "ce":
            return {0.01: 0.40, 0.03: 0.50, 0.1: 0.70, 0.3: math.nan}[cfg.lr]  # lr 0.3 diverges: must not win
        lam = cfg.options.lam
        # SL variants: lam 4 best on seed 100 only, lam 1 best on average over both seeds
        return {0.1: 0.5, 0.25: 0.60, 1.0: 0.75, 4.0: 0.80 if cfg.seed == 100 else 0.60, 10.0: 0.5}[lam]
    fake, seen = _fake_train(score)
    monkeypatch.setattr(reproduce, "train", fake)
    report, chosen = tune_preset("superloss-classification", out=tmp_path, progress=False)
    assert chosen["ce"] == {"lr": 0.1}
    for label in ("SL tau=logC", "SL avg", "SL ema"):
        assert chosen[label] == {"lr": 0.1, "lam": 1.0}
    # every candidate trained once per tuning seed, on the split, never with the reproduction's seeds
    assert len(seen) == (4 + 3 * 5) * 2
    assert {c.seed for c in seen} == {100, 101} and {c.dataset for c in seen} == {"npz"}
    assert all(c.noise_rate == 0.4 for c in seen)
    assert {c.lr for c in seen if c.method == "superloss"} == {0.1}
    text = report.read_text()
    assert text.count("**yes**") == 4 and "| ce | lr 0.3 | nan ± nan |  |" in text


def test_regression_selection_minimises_the_validation_mae(tmp_path, monkeypatch):
    fake, _ = _fake_train(lambda cfg: abs(math.log10(cfg.lr) + 2) + (abs(cfg.options.lam - 0.25) if cfg.method == "superloss" else 0))
    monkeypatch.setattr(reproduce, "train", fake)
    _, chosen = tune_preset("superloss-regression", out=tmp_path, progress=False)
    assert chosen["l2"] == {"lr": 0.01} and chosen["smooth-l1 + SL avg"] == {"lr": 0.01, "lam": 0.25}


def test_runs_use_the_selection_and_borrowers_copy_it(tmp_path, monkeypatch):
    seen = _record_cells(monkeypatch, tmp_path)
    table = {"digits": {"superloss-classification": {"SL avg": {"lr": 0.03, "lam": 4.0}},
                        "data-params-noise": {"ce": {"lr": 0.3}}}}
    run_preset("superloss-confidence", out=tmp_path, seeds=(0,), progress=False, hparams=table)
    assert (seen[-1].lr, seen[-1].options.lam, seen[-1].options.tau) == (0.03, 4.0, "avg")
    run_preset("data-params-random", out=tmp_path, seeds=(0,), progress=False, hparams=table)
    assert [(c.method, c.lr) for c in seen[-2:]] == [("ce", 0.3), ("data-params", 0.3)]
    # a data set without selections keeps the defaults
    run_preset("superloss-confidence", out=tmp_path / "none", seeds=(0,), progress=False, hparams={"idx": {}})
    assert (seen[-1].lr, seen[-1].options.lam) == (0.1, 1.0)
    # a finished cell of another configuration is refused, not silently reused
    with pytest.raises(ValueError, match="another configuration"):
        run_preset("superloss-confidence", out=tmp_path, seeds=(0,), progress=False, hparams={})


def test_variant_config_is_what_each_cell_trains_with(tmp_path, monkeypatch):
    seen = _record_cells(monkeypatch, tmp_path)
    preset = PRESETS["data-params-noise"]
    run_preset("data-params-noise", out=tmp_path, seeds=(3,), progress=False)
    cells = [(label, rate) for rate in preset.rates for label in preset.variants]
    assert len(seen) == len(cells)
    for cfg, (label, rate) in zip(seen, cells):
        if not preset.variants[label].get("oracle"):  # the oracle's configuration depends on its run folder
            assert reproduce.variant_config("data-params-noise", label, noise_rate=rate, seed=3) == cfg
    with pytest.raises(ValueError, match="no variant 'nope'"):
        reproduce.variant_config("data-params-noise", "nope")


def test_cli_tune_writes_the_file_a_run_reads(tmp_path, monkeypatch):
    fake, seen = _fake_train(lambda cfg: {0.03: 0.2, 0.1: 0.3, 0.3: 0.4}.get(cfg.lr, 0.1))
    monkeypatch.setattr(reproduce, "train", fake)
    target = tmp_path / "hp.json"
    assert main(["reproduce", "data-params-noise", "--tune", "--quiet", "--out", str(tmp_path), "--hparams", str(target)]) == 0
    table = json.loads(target.read_text())
    assert table["digits"]["data-params-noise"]["ce"] == {"lr": 0.3}
    assert load_hparams(target) == table
    with pytest.raises(FileNotFoundError, match="hparams file"):
        load_hparams(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown hyper-parameter 'lrr'"):
        run_preset("data-params-noise", out=tmp_path, hparams={"digits": {"data-params-noise": {"ce": {"lrr": 1}}}})
    with pytest.raises(ValueError, match="lam must be a number"):
        run_preset("superloss-confidence", out=tmp_path / "bad",
                   hparams={"digits": {"superloss-classification": {"SL avg": {"lam": "1"}}}})
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="must be a JSON object"):
        run_preset("data-params-noise", out=tmp_path, hparams={"digits": {"data-params-noise": [0.1]}})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_hparams(tmp_path / "bad.json")


def test_shipped_selections_cover_every_tuned_variant_with_a_candidate_value():
    table = load_hparams(HPARAMS_FILE)
    assert set(table) == {"digits", "idx"}
    for dataset, presets in table.items():
        for name, preset in reproduce.PRESETS.items():
            if not preset.tune:
                continue
            for label, grid in preset.tune.items():
                chosen = presets[name][label]
                for key, candidates in grid.items():
                    if key != "from":
                        assert chosen[key] in candidates, (dataset, name, label, key)
