"""Signals on disk: the files are standard `.npy` (numpy's own reader agrees), a table read in blocks
equals the array, a crash between a row and its header loses nothing a checkpoint counted, a streamed
recorder equals an in-memory one, and its memory does not grow with the epochs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from curriculoss import flag
from curriculoss.recorder import Recorder, SIGNALS
from curriculoss.signals import Table, TableWriter, open_signals


def _rows(epochs: int, n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(epochs, n)).astype(np.float32)
    rows[1, ::7] = np.nan
    return rows


def test_a_grown_table_is_what_numpy_reads(tmp_path):
    rows = _rows(5, 1001)
    writer = TableWriter(tmp_path / "t.npy", 1001)
    for row in rows:
        writer.append(row)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), rows)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy", mmap_mode="r"), rows)
    again = TableWriter(tmp_path / "t.npy", 1001)  # continued: its header says 5 rows
    assert again.rows == 5
    again.append(rows[0])
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy")[-1], rows[0])


@pytest.mark.parametrize("key", [(slice(None), slice(None)), (slice(1, 4), slice(10, 500)), (-1,), (2, slice(None)),
                                 (slice(None, None, -2), np.array([0, 999, 5, 5])), (np.array([3, 0]), slice(None))])
def test_a_table_read_in_blocks_equals_the_array(tmp_path, monkeypatch, key):
    rows = _rows(6, 1000)
    writer = TableWriter(tmp_path / "t.npy", 1000, "float16")
    for row in rows:
        writer.append(row)
    monkeypatch.setattr("curriculoss.signals._READ_BYTES", 3000)  # a map per row or two
    expected = rows.astype(np.float16)[key if len(key) > 1 else key[0]]
    np.testing.assert_array_equal(Table(tmp_path / "t.npy")[key if len(key) > 1 else key[0]], expected)


def test_a_row_written_but_not_counted_is_cut_on_resume(tmp_path):
    rows = _rows(3, 50)
    rec = Recorder(50, path=tmp_path / "s")
    state = None
    for epoch, row in enumerate(rows):
        rec.update(torch.arange(50), torch.stack([torch.from_numpy(row), -torch.from_numpy(row)], 1),
                   torch.zeros(50, dtype=torch.long))
        rec.end_epoch()
        if epoch == 1:
            state = rec.state_dict()  # the checkpoint counts 2 epochs; the crash comes after the third's row
    assert int(state["epochs"]) == 2 and not set(SIGNALS) & state.keys()
    resumed = Recorder(50, path=tmp_path / "s")
    resumed.load_state_dict(state)
    assert np.load(tmp_path / "s" / "margin.npy").shape == (2, 50)
    np.testing.assert_array_equal(resumed.signal("margin").numpy(), rec.signal("margin").numpy()[:2])
    with pytest.raises(ValueError, match="holds 2 epochs; 3 are needed"):
        Recorder(50, path=tmp_path / "s").load_state_dict({**state, "epochs": torch.tensor(3)})


def test_a_folder_with_signals_is_continued_only_after_a_resume(tmp_path):
    rec = Recorder(4, path=tmp_path)
    rec.update([0, 1, 2, 3], torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    rec.end_epoch()
    with pytest.raises(ValueError, match=r"holds 1 epoch\(s\) of signals already"):
        Recorder(4, path=tmp_path).update([0], torch.randn(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="give no path"):
        rec.save(tmp_path / "elsewhere")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_streamed_recorder_equals_one_in_memory(tmp_path, dtype):
    n, g = 300, torch.Generator().manual_seed(0)
    memory, streamed = Recorder(n, dtype=dtype), Recorder(n, path=tmp_path / "signals", dtype=dtype)
    for epoch in range(4):
        for idx in torch.randperm(n, generator=g)[:280].split(64):  # 20 samples unseen each epoch
            z, y = torch.randn(len(idx), 5, generator=g), torch.randint(0, 5, (len(idx),), generator=g)
            for rec in (memory, streamed):
                rec.update(idx, z, y, confidence=z[:, 0].exp())
        memory.end_epoch()
        streamed.end_epoch()
    mask = np.arange(n) % 3 == 0
    memory.save(tmp_path / "memory.npz", noise_mask=mask)
    streamed.save(noise_mask=mask)
    a, b = open_signals(tmp_path / "memory.npz"), open_signals(tmp_path / "signals")
    assert set(a) == set(b) == {*SIGNALS, "labels", "predicted", "noise_mask"}
    for key in a:
        np.testing.assert_array_equal(a[key], np.asarray(b[key]), err_msg=key)
    assert b["margin"].dtype == np.dtype(dtype)
    for rec in (memory, streamed):  # last() is the float32 row the table stores in its dtype
        table = memory.signal("loss")
        torch.testing.assert_close(rec.last("loss").to(table.dtype), table[-1], equal_nan=True, rtol=0, atol=0)


def test_flag_on_a_folder_equals_flag_on_the_arrays_whatever_the_block(tmp_path, monkeypatch):
    """Scores, window, count and ranking from tables read in blocks of 7 samples (and the early-learning
    window on a subset of the samples) against the same computation on the arrays in memory, and the mean
    against numpy's nanmean."""
    n, epochs = 500, 12
    rng = np.random.default_rng(1)
    noisy = rng.random(n) < 0.3
    learnt = np.linspace(-1, 3, epochs)[:, None] + rng.normal(0, 1, (epochs, n))
    margin = np.where(noisy, -learnt + np.linspace(0, 5, epochs)[:, None] ** 2 / 5, learnt).astype(np.float32)
    margin[3, :40] = np.nan
    writer = {name: TableWriter(tmp_path / f"{name}.npy", n) for name in SIGNALS}
    for e in range(epochs):
        writer["margin"].append(margin[e])
        writer["loss"].append(np.abs(margin[e]))
        writer["confidence"].append(np.full(n, np.nan, np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(n, np.int64))
    folder = open_signals(tmp_path)
    memory = {key: np.asarray(value) for key, value in folder.items()}
    expected = {score: flag.run_scores(memory, score)[1] for score in ("aum", "loss")}
    small = flag.select_epochs(memory["margin"], max_samples=77)
    monkeypatch.setattr(flag, "BLOCK_BYTES", 8 * epochs * 7)
    for score in ("aum", "loss"):
        got = flag.run_scores(folder, score)[1]
        np.testing.assert_array_equal(got, expected[score])
        np.testing.assert_array_equal(flag.find_label_issues(got, score=score), flag.find_label_issues(expected[score], score=score))
    assert flag.select_epochs(folder["margin"], max_samples=77) == small
    rows = flag.run_window(folder, "aum")
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(flag._nanmean(folder["margin"], rows), np.nanmean(margin[rows].astype(np.float64), 0),
                                   rtol=1e-12)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident memory from /proc")
def test_streamed_recorder_memory_does_not_grow_with_the_epochs(tmp_path):
    """Resident memory after 5 and after 40 epochs of 200,000 samples: the in-memory table grows by
    3 x 4 bytes x 200,000 per epoch (84 MB over 35 epochs); the streamed recorder's does not grow with
    the epochs (a few MB of the allocator's come and go: its epoch buffers are allocated anew). (The
    current resident memory, not the peak: a child's peak starts at its parent's size when it forks.)"""
    code = textwrap.dedent("""
        import resource, sys, torch
        from curriculoss.recorder import Recorder
        n = 200_000
        rec = Recorder(n, path=sys.argv[1] if sys.argv[1] != "-" else None)
        idx, z, y = torch.arange(n), torch.randn(n, 3), torch.randint(0, 3, (n,))
        peaks = []
        for epoch in range(40):
            rec.update(idx, z, y)
            rec.end_epoch()
            with open("/proc/self/statm") as fh:
                peaks.append(int(fh.read().split()[1]) * resource.getpagesize() / 2**20)
        print(peaks[39] - peaks[4])
    """)
    growth = {}
    for name, path in (("memory", "-"), ("streamed", str(tmp_path / "s"))):
        proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        growth[name] = float(proc.stdout.split()[-1])
    assert growth["memory"] > 70, growth  # the test can tell the two apart
    assert growth["streamed"] < 25, growth
