"""Bad input is refused in one line naming the input and what was expected, before anything is written:
malformed signals files, models that are not model factories, tampered checkpoints and configurations, a
full disk, data that is not what a reader expects; default run folders that do not collide; options
from a config file."""
import errno
import functools
import io
import json
import os
import shutil
import signal
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness.cli import main
from curriculoss.signals import open_signals

from _helpers import one_line_error as _error

TINY = ["--limit", "64", "--epochs", "2", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch CE run on 64 digits with 20 % noise; tests change copies of it."""
    root = tmp_path_factory.mktemp("finished")
    assert main(["train", *TINY, "--noise-rate", "0.2", "--out", str(root / "run")]) == 0
    return root / "run"


def _copy(run: Path, tmp_path: Path, *, npz: bool = False) -> Path:
    """A copy of the run; `npz=True`: with its signals in one `signals.npz`, as older versions wrote them."""
    out = Path(shutil.copytree(run, tmp_path / "run"))
    if npz:
        signals = _signals(out)
        shutil.rmtree(out / "signals")
        np.savez(out / "signals.npz", **signals)
    return out


def _stamps(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------- flag on a malformed signals.npz

def _signals(run: Path) -> dict:
    return {key: np.asarray(value) for key, value in open_signals(run).items()}


def _without(arrays: dict, key: str) -> dict:
    return {k: v for k, v in arrays.items() if k != key}


MALFORMED = {
    "no labels": (lambda s: _without(s, "labels"), "member labels is missing"),
    "short margin": (lambda s: {**s, "margin": s["margin"][:, :50]}, "member margin: has shape (2, 50); expected (epochs, 64)"),
    "short labels": (lambda s: {**s, "labels": s["labels"][:50]}, "member loss: has shape (2, 64); expected (epochs, 50)"),
    "long noise mask": (lambda s: {**s, "noise_mask": np.zeros(70, bool)}, "member noise_mask: has shape (70,)"),
    "text margins": (lambda s: {**s, "margin": s["margin"].astype(str)}, "member margin: holds text"),
    "complex margins": (lambda s: {**s, "margin": s["margin"].astype(complex)}, "member margin: holds complex"),
    "boolean margins": (lambda s: {**s, "margin": s["margin"] > 0}, "member margin: holds booleans"),
    "float labels": (lambda s: {**s, "labels": s["labels"].astype(float)}, "member labels: holds floats"),
    "tables of two shapes": (lambda s: {**s, "loss": s["loss"][:1]}, "differ in shape"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_flag_refuses_a_malformed_member_naming_it(finished, tmp_path, capsys, case):
    change, needle = MALFORMED[case]
    path = tmp_path / "signals.npz"
    np.savez(path, **change(_signals(finished)))
    err = _error(capsys, ["flag", str(path)])
    assert err.startswith(f"curriculoss: error: {path}: ") and needle in err, err
    assert not (tmp_path / "suspects.csv").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "corrupt member"])
def test_flag_refuses_a_damaged_archive(finished, tmp_path, capsys, damage):
    run = _copy(finished, tmp_path, npz=True)
    path = run / "signals.npz"
    data = path.read_bytes()
    if damage == "corrupt member":  # a flipped byte in the stored margins: the member's checksum fails
        info = zipfile.ZipFile(path).getinfo("margin.npy")
        at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    path.write_bytes({"empty": b"", "truncated": data[:len(data) // 2]}.get(damage, data))
    err = _error(capsys, ["flag", str(run)])
    assert err.startswith(f"curriculoss: error: {path}: ")
    assert ("member margin" in err) if damage == "corrupt member" else ("not a readable .npz archive" in err)
    assert not (run / "suspects.csv").exists()


def _npy_header(shape, descr="<f8") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array)
    return out.getvalue()


def test_flag_refuses_a_member_declaring_74_gib_before_inflating_it(finished, tmp_path, capsys, monkeypatch):
    path = tmp_path / "signals.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in _without(_signals(finished), "margin").items():
            archive.writestr(key + ".npy", _npy(value))
        archive.writestr("margin.npy", _npy_header((100_000, 100_000)) + bytes(16))
    read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda fh, *a, **k: pytest.fail("an array was inflated")
                        if fh.name == "margin.npy" else read(fh, *a, **k))
    err = _error(capsys, ["flag", str(path)])
    assert f"{path}: member margin: declares shape (100000, 100000) of float64 (80000000000 bytes)" in err


def test_flag_refuses_more_epochs_than_the_run_has(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path, npz=True)
    signals = _signals(finished)
    np.savez(run / "signals.npz", **{**signals, **{k: np.zeros((40, 64), np.float32) for k in ("loss", "margin")}})
    assert "member loss: has 40 epochs; the run (args.json) has 2" in _error(capsys, ["flag", str(run)])


def test_flag_reads_only_the_members_it_uses(finished, tmp_path, monkeypatch):
    run = _copy(finished, tmp_path, npz=True)
    with zipfile.ZipFile(run / "signals.npz", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("embeddings.npy", _npy(np.zeros((64, 20_000), np.float32)))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    assert main(["flag", str(run)]) == 0
    assert "margin.npy" in opened and "embeddings.npy" not in opened and "true_labels.npy" not in opened


FOLDER_DAMAGE = {
    "no labels": (lambda d: (d / "labels.npy").unlink(), "no labels.npy"),
    "truncated table": (lambda d: (d / "margin.npy").write_bytes((d / "margin.npy").read_bytes()[:200]),
                        "margin.npy: the file is shorter than its header's shape (2, 64)"),
    "not a table": (lambda d: (d / "loss.npy").write_bytes(b"hello"), "loss.npy: not a .npy file"),
    "short labels": (lambda d: np.save(d / "labels.npy", np.zeros(50, np.int64)), "expected (epochs, 50) floats"),
    "float predictions": (lambda d: np.save(d / "predicted.npy", np.zeros(64)), "predicted.npy: float64 of shape (64,)"),
    "text mask": (lambda d: np.save(d / "noise_mask.npy", np.array(["a"] * 64)), "noise_mask.npy: <U1"),
    "more epochs than the run": (lambda d: [np.save(d / f"{k}.npy", np.zeros((40, 64), np.float32)) for k in
                                            ("loss", "confidence", "margin")], "the tables hold 40 epochs; the run"),
}


@pytest.mark.parametrize("case", list(FOLDER_DAMAGE))
def test_flag_refuses_a_damaged_signals_folder_naming_the_file(finished, tmp_path, capsys, case):
    damage, needle = FOLDER_DAMAGE[case]
    run = _copy(finished, tmp_path)
    damage(run / "signals")
    err = _error(capsys, ["flag", str(run)])
    assert err.startswith("curriculoss: error: ") and needle in err, err
    assert not (run / "suspects.csv").exists()


# ------------------------------------------------------------------------------------- a bad --model factory

NETS = '''
import torch
import torch.nn as nn


def good(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def three(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def twelve(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12))


def wide_input(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))


class Pair(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(64, n)

    def forward(self, x):
        return self.fc(x.flatten(1)), x


class Number(nn.Module):
    def forward(self, x):
        return 3


def pair(num_classes):
    return Pair(num_classes)


def number(num_classes):
    return Number()


def raises(num_classes):
    raise RuntimeError("needs a GPU\\nand a second line")


not_callable = 3
'''

BAD_MODELS = {
    "three": ("its output has shape (2, 3)", "expected one floating tensor of shape (2, 10)"),
    "twelve": ("its output has shape (2, 12)", "(2, 10): 10 outputs, one per class"),
    "wide_input": ("its forward pass on a batch of shape (2, 1, 8, 8) failed (RuntimeError: mat1 and mat2", ""),
    "pair": ("its forward pass returned tuple", "expected one floating tensor"),
    "number": ("its forward pass returned int", ""),
    "raises": ("the factory raised RuntimeError: needs a GPU", ""),
    "not_callable": ("'not_callable' is not callable", ""),
}


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A package of model factories on the Python path (and a broken module or two), removed afterwards."""
    (tmp_path / "nets_bi.py").write_text(NETS)
    (tmp_path / "syntax_bi.py").write_text("def f(:\n")
    (tmp_path / "boom_bi.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("nets_bi", "syntax_bi", "boom_bi"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("factory", list(BAD_MODELS))
def test_a_bad_model_factory_is_refused_in_one_line(tmp_path, capsys, nets, factory):
    out = tmp_path / "run"
    err = _error(capsys, ["train", *TINY, "--model", f"nets_bi:{factory}", "--out", str(out)])
    first, second = BAD_MODELS[factory]
    assert err.startswith(f"curriculoss: error: --model nets_bi:{factory}: {first}") and second in err, err
    assert not out.exists()


@pytest.mark.parametrize("model,needle", [
    ("syntax_bi:f", "cannot import 'syntax_bi': SyntaxError in "),
    ("boom_bi:f", "importing 'boom_bi' raised RuntimeError: boom at import"),
    ("os:system", "'system' cannot be called as system(num_classes=N)"),
    ("shutil:rmtree", "'rmtree' cannot be called as rmtree(num_classes=N)"),
])
def test_a_module_that_is_not_a_model_factory_is_refused(tmp_path, capsys, nets, monkeypatch, model, needle):
    calls = []
    for module, name in ((os, "system"), (shutil, "rmtree")):  # spies of the same signature
        spy = functools.wraps(getattr(module, name))(lambda *a, **k: calls.append(a))
        monkeypatch.setattr(module, name, spy)
    err = _error(capsys, ["train", *TINY, "--model", model, "--out", str(tmp_path / "run")])
    assert err.startswith(f"curriculoss: error: --model {model}: {needle}"), err
    assert not calls and not (tmp_path / "run").exists()


def test_bench_probes_the_model_before_writing_its_grid(tmp_path, capsys, nets):
    out = tmp_path / "grid"
    err = _error(capsys, ["bench", *TINY, "--methods", "ce", "--noise-rates", "0", "--seeds", "0",
                          "--model", "nets_bi:twelve", "--out", str(out)])
    assert "its output has shape (2, 12)" in err and not (out / "grid.json").exists()


def test_the_probe_leaves_the_run_as_it_was(tmp_path, nets, monkeypatch):
    """A factory's model is probed, and trains exactly as without the probe: the built-in MLP's run, bit for bit."""
    from curriculoss.harness import train

    probed = []
    real = train.probe_model
    monkeypatch.setattr(train, "probe_model", lambda model, name, x, k: probed.append(name) or real(model, name, x, k))
    (tmp_path / "same_bi.py").write_text("from curriculoss.harness.models import MLP\n\n\n"
                                         "def mlp(num_classes):\n    return MLP(64, num_classes)\n")
    try:
        assert main(["train", *TINY, "--model", "same_bi:mlp", "--lr", "0.03", "--out", str(tmp_path / "a")]) == 0
    finally:
        sys.modules.pop("same_bi", None)
    assert main(["train", *TINY, "--out", str(tmp_path / "b")]) == 0
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["model"] for d in "ab")
    assert probed == ["same_bi:mlp"] and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------- tampered checkpoints and configurations

def _tamper(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


TAMPERED = {
    "epoch -2": (lambda s: s.update(epoch=-2), "field epoch is -2; expected an integer in [1, 2]"),
    "epoch 7": (lambda s: s.update(epoch=7), "field epoch is 7"),
    "no optimizer": (lambda s: s.pop("optimizer"), "missing field(s) optimizer"),
    "history": (lambda s: s.update(history=s["history"][:1]), "field history holds 1 epochs, field epoch says 2"),
    "model weights": (lambda s: s["model"].update({k: v[:3] for k, v in s["model"].items()}),
                      "cannot restore the run from it (RuntimeError"),
    "config": (lambda s: s["config"].update(epochs="2"), "field config is not a valid configuration (epochs must"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused_naming_the_field(finished, tmp_path, capsys, case):
    run = _copy(finished, tmp_path)
    change, needle = TAMPERED[case]
    _tamper(run / "checkpoint.pt", change)
    before = _stamps(run)
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert err.startswith(f"curriculoss: error: {run / 'checkpoint.pt'}: ") and needle in err, err
    assert _stamps(run) == before


@pytest.mark.parametrize("command", ["train", "flag"])
def test_a_string_where_args_json_holds_a_number_is_refused(finished, tmp_path, capsys, command):
    run = _copy(finished, tmp_path)
    args = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**args, "noise_rate": "0.4"}))
    before = _stamps(run)
    argv = ["train", "--resume", str(run), "--quiet"] if command == "train" else ["flag", str(run)]
    err = _error(capsys, argv)
    assert err.startswith(f"curriculoss: error: {run / 'args.json'}: ") and "noise_rate must be a number, got '0.4'" in err
    assert _stamps(run) == before


def test_a_full_disk_while_checkpointing_loses_nothing(finished, tmp_path, capsys, monkeypatch):
    run = _copy(finished, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()

    def full(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert err.startswith(f"curriculoss: error: {run / 'checkpoint.pt'}: {os.strerror(errno.ENOSPC)}")
    assert "checkpoint.pt.tmp was removed" in err
    assert not (run / "checkpoint.pt.tmp").exists() and (run / "checkpoint.pt").read_bytes() == before


# --------------------------------------------------------------------------------------------- data readers

@pytest.fixture
def deadline():
    """A read that blocks (a FIFO opened) fails the test after a minute instead of hanging it."""
    def expire(*_):
        raise TimeoutError("a read blocked: the FIFO was opened")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("dataset", ["csv", "npz", "idx"])
def test_a_data_dir_that_is_not_a_file_or_folder_is_refused_before_reading(tmp_path, capsys, deadline, dataset):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it to read would block until a writer comes
    err = _error(capsys, ["train", *TINY, "--dataset", dataset, "--data-dir", str(fifo), "--out", str(tmp_path / "o")])
    assert f"--data-dir {fifo}: a FIFO (named pipe), not a regular file or a directory (expected " in err
    from curriculoss.harness import data as datasets

    with pytest.raises(ValueError, match="a FIFO"):
        datasets.load(dataset, data_dir=fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_dev_zero_as_a_csv_is_refused_before_reading(tmp_path, capsys, deadline):
    err = _error(capsys, ["train", *TINY, "--dataset", "csv", "--data-dir", "/dev/zero", "--out", str(tmp_path / "o")])
    assert "--data-dir /dev/zero: a character device, not a regular file or a directory" in err
    fifo_in_folder = tmp_path / "csvdir"
    fifo_in_folder.mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo_in_folder / "train.csv")
        assert f"{fifo_in_folder / 'train.csv'}: a FIFO" in _error(
            capsys, ["train", *TINY, "--dataset", "csv", "--data-dir", str(fifo_in_folder), "--out", str(tmp_path / "o")])


def _images(folder: Path, count: int = 3) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("layout,needle", [
    (("cat",), "one class folder ('cat'); a classifier needs at least 2"),
    (("train/cat", "train/dog"), "holds train/ but no test/, which would be read as a single class 'train'"),
])
def test_an_image_folder_of_one_class_is_refused(tmp_path, capsys, layout, needle):
    pytest.importorskip("PIL")
    root = tmp_path / "images"
    for folder in layout:
        _images(root / folder)
    err = _error(capsys, ["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(root),
                          "--out", str(tmp_path / "o")])
    assert needle in err and not (tmp_path / "o").exists()


def _png_header(width: int, height: int) -> bytes:
    """A 1-bit PNG declaring ``width`` x ``height`` pixels, with no image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_an_image_declaring_13000_by_13000_pixels_is_not_decoded(tmp_path, capsys, monkeypatch):
    from PIL import ImageFile

    root = tmp_path / "images"
    _images(root / "cat")
    _images(root / "dog")
    (root / "dog" / "huge.png").write_bytes(_png_header(13000, 13000))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    err = _error(capsys, ["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(root),
                          "--out", str(tmp_path / "o")])
    assert f"{root / 'dog' / 'huge.png'}: its header declares 13000x13000 pixels, more than the 64 megapixels" in err
    assert (13000, 13000) not in decoded


def _idx(path: Path, shape: tuple[int, ...], data: bytes = b"") -> None:
    path.write_bytes(bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + data)


def test_idx_images_of_zero_pixels_are_refused(tmp_path, capsys):
    for split, n in (("train", 10), ("t10k", 4)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte", (n, 0, 0))
        _idx(tmp_path / f"{split}-labels-idx1-ubyte", (n,), bytes(i % 2 for i in range(n)))
    err = _error(capsys, ["train", *TINY, "--dataset", "idx", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert f"{tmp_path / 'train-images-idx3-ubyte'}: images of 0x0 pixels; expected at least 1x1" in err


@pytest.mark.parametrize("case", ["uint64 beyond int64", "truncated"])
def test_an_unreadable_noise_file_is_named(tmp_path, capsys, case):
    path = tmp_path / "noisy.npy"
    np.save(path, np.full(64, 2 ** 63 + 5, np.uint64))
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    err = _error(capsys, ["train", *TINY, "--noise", "file", "--noise-file", str(path), "--out", str(tmp_path / "o")])
    assert str(path) in err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- default run folder names

def test_default_run_folders_differ_by_the_options_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for extra in (["--lr", "0.05"], ["--lr", "0.1"], ["--lr", "0.1", "--epochs", "1"],
                  ["--method", "superloss", "--lam", "2"], ["--method", "superloss", "--lam", "3"]):
        assert main(["train", *TINY, *extra]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 5 and "digits-ce-rate0-seed0-lr0.05-e2-bs32-n64" in names, names
    assert "digits-ce-rate0-seed0-lr0.1-e1-bs32-n64" in names
    assert sum(n.startswith("digits-superloss-rate0-seed0-e2-bs32-n64-cfg") for n in names) == 2


# ------------------------------------------------------------------------------------- options from a file

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
