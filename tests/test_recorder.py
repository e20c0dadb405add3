"""The recorder of per-sample signals: margins against a brute-force loop, losses against scipy, the
table against a hand-filled one, state round trips, DDP against one process, and a user's own loop
against ``curriculoss train``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.special import log_softmax

from curriculoss import flag
from curriculoss.harness.cli import main
from curriculoss.harness.train import TrainConfig, train
from curriculoss.recorder import Recorder, SIGNALS, margins
from curriculoss.signals import open_signals

from _helpers import load_example


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flag_own_loop.py"


def _brute_margin(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = []
    for row, label in zip(z, y):
        others = [v for j, v in enumerate(row) if j != label]
        out.append(row[label] - max(others))
    return np.array(out)


def test_margins_against_a_loop(device):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 7, generator=g)
    z[3, 2] = z[3, 5] = 4.0  # a tie between the label's logit and another: margin 0
    y = torch.randint(0, 7, (50,), generator=g)
    y[3] = 2
    got = margins(z.to(device), y.to(device)).cpu().numpy()
    np.testing.assert_allclose(got, _brute_margin(z.numpy(), y.numpy()), rtol=1e-6, atol=1e-6)
    assert got[3] == 0.0


def _batches(n=30, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    out = []
    for idx in order[:n - 3].split(7):  # samples order[-3:] are never seen
        out.append((idx, torch.randn(len(idx), c, generator=g, dtype=torch.float64),
                    torch.randint(0, c, (len(idx),), generator=g), torch.rand(len(idx), generator=g)))
    return out, order[n - 3:]


def _recorded(epochs: int) -> Recorder:
    """A recorder of 30 samples that took `epochs` epochs of `_batches` (seeds 0, 1, ...) in one process."""
    rec = Recorder(30)
    for epoch in range(epochs):
        for idx, z, y, conf in _batches(seed=epoch)[0]:
            rec.update(idx, z, y, confidence=conf)
        rec.end_epoch()
    return rec


def test_table_against_hand_filled(device):
    n, c = 30, 4
    rec = Recorder(n)
    expected = {name: np.full((2, n), np.nan) for name in SIGNALS}
    labels = np.full(n, -1)
    for epoch in range(2):
        batches, unseen = _batches(n, c, seed=epoch)
        for idx, z, y, conf in batches:
            rec.update(idx.to(device), z.to(device), y.to(device), confidence=conf.to(device))
            zn, yn = z.numpy(), y.numpy()
            expected["loss"][epoch, idx.numpy()] = -log_softmax(zn, axis=1)[np.arange(len(yn)), yn]
            expected["confidence"][epoch, idx.numpy()] = conf.numpy()
            expected["margin"][epoch, idx.numpy()] = _brute_margin(zn, yn)
            labels[idx.numpy()] = yn
        rec.end_epoch()
        assert rec.epochs == epoch + 1
    for name in SIGNALS:
        np.testing.assert_allclose(rec.signal(name).numpy(), expected[name], rtol=1e-5, atol=1e-6, equal_nan=True,
                                   err_msg=name)
    assert np.isnan(rec.signal("loss").numpy()[1, unseen.numpy()]).all()
    np.testing.assert_array_equal(rec.arrays()["labels"], labels)
    np.testing.assert_array_equal(rec.last("margin").numpy(), rec.signal("margin").numpy()[-1])


def test_given_loss_and_regression_outputs():
    rec = Recorder(4)
    rec.update(torch.tensor([0, 1]), torch.randn(2, 1), torch.tensor([0.5, 1.5]), loss=torch.tensor([1.0, 2.0]))
    rec.update([2, 3], torch.randn(2), torch.tensor([0.5, 1.5]), loss=torch.tensor([3.0, 4.0]))
    rec.end_epoch()
    np.testing.assert_array_equal(rec.signal("loss").numpy(), [[1, 2, 3, 4]])
    assert np.isnan(rec.signal("margin").numpy()).all() and np.isnan(rec.signal("confidence").numpy()).all()


def test_state_dict_round_trip(tmp_path):
    rec = _recorded(epochs=3)
    torch.save(rec.state_dict(), tmp_path / "rec.pt")
    other = Recorder(30)
    other.load_state_dict(torch.load(tmp_path / "rec.pt", weights_only=True))
    assert other.epochs == 3
    a, b = rec.arrays(), other.arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rec.update(*_batches()[0][0][:3])
    with pytest.raises(RuntimeError, match="end_epoch"):
        rec.state_dict()


def test_save_is_what_flag_reads(tmp_path, capsys):
    n = 200
    g = torch.Generator().manual_seed(3)
    wrong = torch.zeros(n, dtype=torch.bool)
    wrong[:40] = True
    y_true = torch.randint(0, 3, (n,), generator=g)
    y = torch.where(wrong, (y_true + 1) % 3, y_true)
    rec = Recorder(n)
    for epoch in range(6):
        z = torch.nn.functional.one_hot(y_true, 3).double() * (1 + epoch) + 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
        for idx in torch.randperm(n, generator=g).split(32):
            rec.update(idx, z[idx], y[idx])
        rec.end_epoch()
    rec.save(tmp_path, noise_mask=wrong.numpy())  # a folder: signals.npz inside
    saved = np.load(tmp_path / "signals.npz")
    assert set(saved.files) == {*SIGNALS, "labels", "predicted", "noise_mask"}
    assert main(["flag", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "40 of 200 (20.0 %) flagged" in printed  # the model always prefers the true class: every wrong label, no other
    suspects = np.genfromtxt(tmp_path / "suspects.csv", delimiter=",", names=True, dtype=None)
    assert set(suspects["index"][suspects["flagged"] == 1]) == set(range(40))


@pytest.mark.parametrize("call,match", [
    (lambda: Recorder(0), "num_samples"),
    (lambda: Recorder(3).update(torch.tensor([0.0]), torch.randn(1, 2), torch.tensor([0])), "index"),
    (lambda: Recorder(3).update(torch.tensor([0, 1]), torch.randn(3, 2), torch.tensor([0, 1])), "outputs"),
    (lambda: Recorder(3).update(torch.tensor([0, 1]), torch.randn(2, 2), torch.tensor([0])), "labels"),
    (lambda: Recorder(3).update(torch.tensor([0]), torch.randn(1, 1), torch.tensor([0.5])), "loss"),
    (lambda: Recorder(3).update(torch.tensor([0]), torch.randn(1, 2), torch.tensor([0]), confidence=torch.ones(2)), "confidence"),
    (lambda: Recorder(3).signal("weight"), "name"),
    (lambda: margins(torch.randn(2, 1), torch.tensor([0, 0])), "logits"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_out_of_range_index_on_the_cpu_is_refused_at_the_call_and_loses_nothing(tmp_path):
    rec = Recorder(3)
    rec.update(torch.tensor([0, 1]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"index must be in \[0, 3\).*\[0, 5\]"):
        rec.update(torch.tensor([0, 5]), torch.randn(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        rec.update(np.array([-1, 2]), torch.randn(2, 2), torch.tensor([0, 1]))
    rec.end_epoch()
    np.testing.assert_allclose(rec.last("margin").numpy()[:2], [2.0, 1.0])  # the good batch is kept
    assert torch.isnan(rec.last("margin")[2])


def test_out_of_range_index_off_the_cpu_is_refused_at_the_end_of_the_epoch_naming_its_batch(monkeypatch):
    # as on an accelerator, where update does not read the indices (that would wait for the device)
    monkeypatch.setattr(Recorder, "_checks_at_update", staticmethod(lambda device: False))
    rec = Recorder(3)
    rec.update(torch.tensor([0, 1]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    rec.update(torch.tensor([2, 7]), torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"update call 2 of this epoch had values in \[2, 7\].*1 kept"):
        rec.end_epoch()
    rec.end_epoch()
    np.testing.assert_allclose(rec.last("margin").numpy()[:2], [2.0, 1.0])
    assert torch.isnan(rec.last("margin")[2])  # the refused batch wrote nothing, also for its valid index 2


def test_save_creates_the_folder_and_refuses_an_open_epoch_or_bad_extras(tmp_path):
    rec = Recorder(3)
    rec.update(torch.arange(3), torch.randn(3, 2), torch.tensor([0, 1, 0]))
    with pytest.raises(RuntimeError, match="end_epoch"):
        rec.save(tmp_path / "run" / "signals.npz")
    rec.end_epoch()
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        rec.save(tmp_path / "run", labels=[0, 1])
    with pytest.raises(ValueError, match="numeric or bool"):
        rec.save(tmp_path / "run", extra=np.array([object(), 1, 2], dtype=object))
    rec.save(tmp_path / "new" / "deeper" / "signals.npz")
    rec.save(tmp_path / "folder")
    assert (tmp_path / "new" / "deeper" / "signals.npz").exists() and (tmp_path / "folder" / "signals.npz").exists()


def _ddp_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rec, streamed = Recorder(30), Recorder(30, path=Path(out_dir) / "signals")
        for epoch in range(2):
            batches, _ = _batches(seed=epoch)
            for b, (idx, z, y, conf) in enumerate(batches):
                if b == 1 and rank == 1:
                    continue  # rank 1 sees no sample of this batch (an empty local shard)
                parts = [t.tensor_split(world)[rank] if b != 1 else t for t in (idx, z, y, conf)]
                for r in (rec, streamed):
                    r.update(*parts[:3], confidence=parts[3])
            rec.end_epoch()
            streamed.end_epoch()
        rec.save(Path(out_dir) / "signals.npz")
        streamed.save()
        torch.save({**rec.state_dict(), "last_margin": rec.last("margin")}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_record_shards_and_rank0_writes_the_whole(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    one = _recorded(epochs=2)
    saved, streamed = np.load(tmp_path / "signals.npz"), open_signals(tmp_path / "signals")
    for key, value in one.arrays().items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
        np.testing.assert_array_equal(np.asarray(streamed[key]), value, err_msg=key)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    torch.testing.assert_close(rank0["margin"], one.signal("margin"), equal_nan=True)
    assert not set(SIGNALS) & rank1.keys() and int(rank1["epochs"]) == 2  # only the writer keeps the table
    for state in (rank0, rank1):  # every rank has the last epoch, and the labels
        torch.testing.assert_close(state["last_margin"], one.last("margin"), equal_nan=True)
        torch.testing.assert_close(state["labels"], one.labels)
    assert not list(tmp_path.glob("*.tmp"))


def test_own_loop_flags_what_the_harness_flags(tmp_path):
    """The example's plain loop + recorder against `curriculoss train` on the same seed, order and model."""
    epochs = 4
    cfg = TrainConfig(dataset="digits", model="mlp", method="ce", noise="symmetric", noise_rate=0.4, epochs=epochs,
                      seed=1)
    train(cfg, tmp_path / "run", progress=False)
    harness = open_signals(tmp_path / "run")
    recorder, mask = load_example(EXAMPLE).train_and_record(epochs=epochs, noise_rate=0.4, seed=1)
    own = recorder.arrays(noise_mask=mask)
    for key in (*SIGNALS, "labels", "noise_mask"):
        np.testing.assert_allclose(own[key], harness[key], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=key)
    s_own, s_harness = flag.run_scores(own)[1], flag.run_scores(harness, method="ce")[1]
    np.testing.assert_array_equal(flag.find_label_issues(s_own, score="aum"), flag.find_label_issues(s_harness, score="aum"))


def test_recorder_and_flag_import_no_harness():
    import subprocess
    import sys

    code = ("import sys, curriculoss.recorder, curriculoss.flag; "
            "bad = [m for m in sys.modules if m.startswith('curriculoss.harness')]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_failed_save_leaves_no_partial_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    rec = Recorder(3)
    rec.update(torch.arange(3), torch.randn(3, 2), torch.tensor([0, 1, 0]))
    rec.end_epoch()
    rec.save(tmp_path)
    before = (tmp_path / "signals.npz").read_bytes()

    def full_disk(fh, **arrays):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        rec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signals.npz"]
    assert (tmp_path / "signals.npz").read_bytes() == before
