"""curriculoss.harness.devices: the device, the memory and the process group a run uses."""
from __future__ import annotations

import csv
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from curriculoss.harness import train as train_mod
from curriculoss.harness.cli import main
from curriculoss.harness.devices import end_distributed
from curriculoss.harness.train import load_checkpoint, resolve_device
from curriculoss.signals import open_signals

from _helpers import same_run_outputs


def test_resolve_device(capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
        # The CLI reports it as an error naming the device, not a traceback.
        assert main(["train", "--device", "cuda", "--limit", "16", "--epochs", "1", "--quiet"]) != 0
        assert "device 'cuda': CUDA is not available" in capsys.readouterr().err


def test_available_memory_is_shared_by_the_local_ranks(monkeypatch):
    one = train_mod.available_memory()
    if one is None:
        pytest.skip("no memory figure on this system")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    # other processes allocate meanwhile: a quarter, give or take a tenth of the machine's figure
    assert train_mod.available_memory() == pytest.approx(one / 4, rel=0.1)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds torchrun's workers through /proc")


WORLD = 2


def test_teardown_waits_for_the_other_ranks_only_after_a_finished_run(monkeypatch, tmp_path):
    # After an error a barrier would leave the other ranks (and this one) waiting for a rank that failed.
    calls = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    for finished, expected in ((True, ["barrier"]), (False, [])):
        calls.clear()
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / str(finished)}", rank=0, world_size=1)
        end_distributed(finished)
        assert calls == expected and not dist.is_initialized()


# ----------------------------------------------------------------------------------------- torchrun end to end
# 801 % 8 = 1: rank 1's last slice is empty. A small learning rate keeps training out of the chaotic regime in
# which float32 rounding differences (a sum over two halves instead of one batch) grow exponentially.
TORCHRUN_ARGS = ["--dataset", "digits", "--limit", "801", "--epochs", "3", "--batch-size", "8", "--lr", "0.02",
                 "--method", "data-params", "--noise-rate", "0.4", "--quiet"]


def _torchrun(*argv: str, **kwargs) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a rank that dies of a signal prints where it was (Python frames, or none: shutdown).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "curriculoss", "train", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=os.setsid, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is dead
                        break
            except OSError:
                break
            time.sleep(0.01)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    # NaN (a column that does not apply to the method, e.g. SuperLoss's cap share) as None: comparable
    return [{k: (None if math.isnan(float(v)) else float(v)) for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun") / "run"
    printed = _finish(_torchrun(*TORCHRUN_ARGS, "--out", str(out)))
    return out, printed


def test_torchrun_train_matches_one_process(torchrun_run, tmp_path):
    two, printed = torchrun_run
    assert printed.count("run folder:") == 1  # rank 0 reports
    one = tmp_path / "one"
    assert main(["train", *TORCHRUN_ARGS, "--out", str(one)]) == 0
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(two.glob("*.tmp"))
    m1, m2 = _metrics(one), _metrics(two)
    assert len(m1) == len(m2) == 3
    for r1, r2 in zip(m1, m2):
        for key in r1:  # float32 rounding may move a borderline prediction: accuracies to 2 samples
            if r1[key] is None:
                assert r2[key] is None, key
                continue
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=0.005 if "acc" in key or "test" in key else 1e-6), key
    a, b = open_signals(one), open_signals(two)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.isfinite(b["loss"]).all() and np.isfinite(b["confidence"]).all()  # every sample, every epoch
    s1, s2 = load_checkpoint(one / "checkpoint.pt"), load_checkpoint(two / "checkpoint.pt")
    for part in ("model", "method"):
        assert s1[part].keys() == s2[part].keys()
        for key in s1[part]:
            torch.testing.assert_close(s2[part][key], s1[part][key], rtol=1e-4, atol=1e-6, msg=key)
    # a checkpoint written under torchrun resumes in one process (same format)
    assert s2["config"] == s1["config"] and s2["epoch"] == 3


@needs_proc
def test_torchrun_killed_run_resumes_to_the_same_result(torchrun_run, tmp_path):
    reference, _ = torchrun_run
    killed = tmp_path / "killed"
    proc = _torchrun(*TORCHRUN_ARGS, "--out", str(killed))
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # into the second epoch
    victims = [proc.pid, *_descendants(proc.pid)]  # torchrun starts its workers in their own process groups
    assert len(victims) >= 1 + WORLD
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    _wait_gone(victims)
    assert (killed / "checkpoint.pt").exists()
    assert len(_metrics(killed)) < 3, "the run finished before it was killed: the test proves nothing"
    _finish(_torchrun("--resume", str(killed), "--quiet"))
    assert _metrics(killed) == _metrics(reference)
    same_run_outputs(reference, killed)  # signals, weights, method state and history


def test_torchrun_streamed_imagefolder_matches_one_process_in_memory(tmp_path):
    """Streamed under torchrun: each rank decodes only its slice of every global batch (an empty one
    included: 27 images, 21 after the 20 % test split, batches of 5: the last batch of 1 leaves rank 1
    nothing), and the run matches one process holding the set in memory."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for c, count in (("a", 14), ("b", 13)):
        (tmp_path / "D" / c).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "D" / c / f"{i}.png")
    args = ["--dataset", "imagefolder", "--data-dir", str(tmp_path / "D"), "--image-size", "8", "--model", "lenet",
            "--epochs", "2", "--batch-size", "5", "--lr", "0.02", "--method", "superloss", "--noise-rate", "0.3",
            "--device", "cpu", "--quiet"]
    _finish(_torchrun(*args, "--stream", "yes", "--workers", "1", "--out", str(tmp_path / "two")))
    assert main(["train", *args, "--stream", "no", "--out", str(tmp_path / "one")]) == 0
    assert len(open_signals(tmp_path / "one")["labels"]) % 5 == 1
    a, b = open_signals(tmp_path / "one"), open_signals(tmp_path / "two")
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6, err_msg=key)
    s1, s2 = load_checkpoint(tmp_path / "one" / "checkpoint.pt"), load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    for key in s1["model"]:
        torch.testing.assert_close(s2["model"][key], s1["model"][key], rtol=1e-4, atol=1e-6, msg=key)
