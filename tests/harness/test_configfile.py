"""curriculoss.harness.configfile: a command's options read from a TOML or YAML file."""
import json
import sys

import pytest

from curriculoss.harness.cli import main

from _helpers import one_line_error as _error


def test_config_file_options_are_overridden_by_the_command_line(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('method = "superloss"\nnoise-rate = 0.4\nepochs = 1\nlimit = 64\nbatch_size = 32\n'
                      'milestones = [1]\nschedule = "step"\nquiet = true\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--noise-rate", "0.2", "--out", str(run)]) == 0
    args = json.loads((run / "args.json").read_text())
    assert (args["method"], args["noise_rate"], args["epochs"], args["limit"], args["batch_size"],
            args["milestones"]) == ("superloss", 0.2, 1, 64, 32, [1])
    # the run's own config.toml trains the same run again
    again = tmp_path / "again"
    assert main(["train", "--config", str(run / "config.toml"), "--quiet", "--out", str(again)]) == 0
    assert json.loads((again / "args.json").read_text()) == args


def test_yaml_config_file(tmp_path):
    pytest.importorskip("yaml")
    config = tmp_path / "run.yaml"
    config.write_text("method: imae\nepochs: 1\nlimit: 64\n")
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "args.json").read_text())["method"] == "imae"


@pytest.mark.parametrize("text,needle", [
    ('methd = "ce"\nbogus = 1\nepochs = 1\n', "unknown option(s) 'methd', 'bogus'; a key is a long option of"),
    ('resume = "runs/x"\n', "unknown option(s) 'resume'"),
    ("epochs = 0\n", "argument --epochs: expected a positive integer, got '0'"),
    ("noise-rate = 0.4\nnoise_rate = 0.2\n", "option 'noise_rate' given twice (also as 'noise-rate')"),
    ("compile = 1\n", "compile: expected true or false, got 1"),
    ("epochs = \n", "not valid TOML"),
])
def test_a_bad_config_file_is_refused_naming_it(tmp_path, capsys, text, needle):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    err = _error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert err.startswith(f"curriculoss: error: --config {config}: ") and needle in err, err
    assert not (tmp_path / "run").exists()


def test_a_config_files_model_code_is_imported_only_when_the_command_line_names_it(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "MARKER"
    (tmp_path / "pwn_bi.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                        "import torch.nn as nn\n\n\ndef f(num_classes):\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "config.toml"
    config.write_text('model = "pwn_bi:f"\nepochs = 1\nlimit = 64\n')
    try:
        err = _error(capsys, ["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "run")])
        assert not marker.exists() and "pwn_bi" not in sys.modules
        assert err.startswith(f"curriculoss: error: --config {config}: its model 'pwn_bi:f' is code")
        assert main(["train", "--config", str(config), "--model", "pwn_bi:f", "--quiet", "--out",
                     str(tmp_path / "run")]) == 0
        assert marker.exists()
    finally:
        sys.modules.pop("pwn_bi", None)
