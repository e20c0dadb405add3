"""curriculoss.harness.data.imagefolder: folders of images, read in memory or streamed."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculoss.harness import data as datasets
from curriculoss.harness.data.imagefolder import ImageFiles, moment_stats

from _helpers import TINY64, one_line_error as _error, write_png_folder, write_pngs

pytest.importorskip("PIL.Image")


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
    err = _error(capsys, ["train", *TINY64, "--dataset", "imagefolder", "--data-dir", str(root),
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
    err = _error(capsys, ["train", *TINY64, "--dataset", "imagefolder", "--data-dir", str(root),
                          "--out", str(tmp_path / "o")])
    assert f"{root / 'dog' / 'huge.png'}: its header declares 13000x13000 pixels, more than the 64 megapixels" in err
    assert (13000, 13000) not in decoded


def test_imagefolder_split_and_given_split(tmp_path):
    write_png_folder(tmp_path / "flat", classes=("a", "b", "c"), per_class=5)
    d = datasets.load("imagefolder", data_dir=tmp_path / "flat", image_size=16)
    assert d.num_classes == 3 and len(d.y_train) + len(d.y_test) == 15 and d.input_shape == (3, 16, 16)
    write_png_folder(tmp_path / "s" / "train", per_class=4)
    write_png_folder(tmp_path / "s" / "test", per_class=2, seed=1)
    (tmp_path / "s" / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    d = datasets.load("imagefolder", data_dir=tmp_path / "s", image_size=20)
    assert (len(d.y_train), len(d.y_test)) == (8, 4) and sorted(set(d.y_test)) == [0, 1]
    # The pixels, resized to their own size: the PNG's bytes, standardised.
    from PIL import Image
    raw = np.asarray(Image.open(tmp_path / "s" / "train" / "cat" / "0.png"), np.float32) / 255
    mean, std = d.normalisation
    np.testing.assert_allclose(d.x_train[0] * std[:, None, None] + mean[:, None, None], raw.transpose(2, 0, 1), atol=1e-5)


def test_imagefolder_bad_images(tmp_path, capsys):
    write_png_folder(tmp_path, per_class=4)
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="truncated.png"):
        datasets.load("imagefolder", data_dir=tmp_path)
    d = datasets.load("imagefolder", data_dir=tmp_path, skip_bad_images=True)
    assert len(d.y_train) + len(d.y_test) == 8
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
    # Decoded by DataLoader workers: the same images, the same error naming the file.
    with pytest.raises(ValueError, match="truncated.png"):
        datasets.load("imagefolder", data_dir=tmp_path, workers=2)
    d2 = datasets.load("imagefolder", data_dir=tmp_path, skip_bad_images=True, workers=2)
    np.testing.assert_array_equal(d.x_train, d2.x_train)
    np.testing.assert_array_equal(d.y_test, d2.y_test)
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        datasets.load("imagefolder", data_dir=tmp_path / "cat")


def test_moment_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 3, 5, 4), dtype=np.uint8)
    wide = images.reshape(9, 3, -1).astype(np.int64)
    moments = np.stack([wide.sum(2), (wide * wide).sum(2)], axis=1)
    mean, std = moment_stats(moments, 20)
    ref = images.astype(np.float64) / 255  # the exact pixel values, float64: an independent reference
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-7)
    # a constant channel: std 1, not 0
    assert moment_stats(np.array([[[0, 5, 0], [0, 25, 0]]]), 1)[1][0] == 1.0


@pytest.mark.parametrize("limit", [None, 11])
def test_streamed_samples_are_the_in_memory_rows(tmp_path, limit):
    write_pngs(tmp_path / "D")
    mem = datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, limit=limit)
    st = datasets.load("imagefolder", data_dir=tmp_path / "D", image_size=8, limit=limit, stream=True)
    assert isinstance(st.x_train, ImageFiles) and isinstance(mem.x_train, np.ndarray)
    assert st.x_train.shape == mem.x_train.shape and st.input_shape == mem.input_shape == (3, 8, 8)
    np.testing.assert_array_equal(st.y_train, mem.y_train)
    np.testing.assert_array_equal(st.y_test, mem.y_test)
    for a, b in zip(st.normalisation, mem.normalisation):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(torch.stack([st.x_train[i] for i in range(len(st.x_train))]).numpy(), mem.x_train)
    np.testing.assert_array_equal(torch.stack([st.x_test[i] for i in range(len(st.x_test))]).numpy(), mem.x_test)
    # the statistics are those of the kept training images (after limit), to float32 precision
    raw = (mem.x_train * mem.normalisation[1][:, None, None] + mem.normalisation[0][:, None, None]).astype(np.float64)
    np.testing.assert_allclose(mem.normalisation[0], raw.mean(axis=(0, 2, 3)), rtol=1e-5)
