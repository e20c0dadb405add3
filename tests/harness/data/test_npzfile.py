"""curriculoss.harness.data.npzfile: a damaged or hostile archive is refused before anything is inflated."""
import io
import zipfile

import numpy as np
import pytest

from curriculoss.harness import data as datasets
from curriculoss.harness.cli import main

from _helpers import (copy_run as _copy, one_line_error as _error, peak_bytes as _peak_bytes, signals_of as _signals,
                      without as _without)


@pytest.mark.parametrize("damage", ["empty", "truncated", "corrupt member"])
def test_flag_refuses_a_damaged_archive(finished_run, tmp_path, capsys, damage):
    run = _copy(finished_run, tmp_path, npz=True)
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


def test_flag_refuses_a_member_declaring_74_gib_before_inflating_it(finished_run, tmp_path, capsys, monkeypatch):
    path = tmp_path / "signals.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in _without(_signals(finished_run), "margin").items():
            archive.writestr(key + ".npy", _npy(value))
        archive.writestr("margin.npy", _npy_header((100_000, 100_000)) + bytes(16))
    read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda fh, *a, **k: pytest.fail("an array was inflated")
                        if fh.name == "margin.npy" else read(fh, *a, **k))
    err = _error(capsys, ["flag", str(path)])
    assert f"{path}: member margin: declares shape (100000, 100000) of float64 (80000000000 bytes)" in err


def test_flag_reads_only_the_members_it_uses(finished_run, tmp_path, monkeypatch):
    run = _copy(finished_run, tmp_path, npz=True)
    with zipfile.ZipFile(run / "signals.npz", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("embeddings.npy", _npy(np.zeros((64, 20_000), np.float32)))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    assert main(["flag", str(run)]) == 0
    assert "margin.npy" in opened and "embeddings.npy" not in opened and "true_labels.npy" not in opened


def test_npz_unused_and_lying_members_are_not_inflated(tmp_path):
    import zipfile

    x, y = np.ones((20, 3)), np.arange(20) % 2
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y, junk=np.zeros(64 << 17))  # 64 MiB never used
    peak, error = _peak_bytes(lambda: datasets.load("npz", data_dir=path))
    assert error is None and peak < 16 << 20, (peak, error)
    # x declares 10^10 float64 values and holds 80 bytes: refused before the 80 GB allocation
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", head.getvalue() + bytes(80))
        buf = io.BytesIO()
        np.save(buf, y)
        zf.writestr("y.npy", buf.getvalue())
    with pytest.raises(ValueError, match=r"d\.npz: member x declares shape \(1000000000, 10\)"):
        datasets.load("npz", data_dir=path)
