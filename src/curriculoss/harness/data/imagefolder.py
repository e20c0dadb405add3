"""A folder of images, one sub-folder per class: the layout every vision user has.

::

    DIR/cat/001.png  DIR/dog/002.jpg ...                         (split off 20 %, seeded)
    DIR/train/cat/001.png ... DIR/test/cat/101.png ...           (the given split)

Classes are the sub-folder names in sorted order (the test split's folders must be among the
training split's). Files with an image extension (PNG, JPEG, BMP, GIF, WebP, TIFF) are decoded with
Pillow (``pip install curriculoss[image]``), fully (so that a truncated file is found here, not in the
middle of an epoch), converted to RGB and resized to ``image_size`` x ``image_size`` (bilinear); other
files are ignored. A file Pillow cannot read, a truncated one, or one in a mode that has no RGB
conversion is an error naming the file, or, with ``skip_bad_images``, skipped and counted on stderr.

The set is held in memory (``N x 3 x S x S`` float32: 50,000 images of 32 x 32 are 600 MB); with
``workers > 0`` the files are decoded by that many ``DataLoader`` worker processes (same result, in
the same order). Streaming from disk during training is not implemented.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "read_image_folder", "BadImageError"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class BadImageError(ValueError):
    """An image file that cannot be decoded to RGB (the message names the file)."""


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("--dataset imagefolder needs Pillow: pip install 'curriculoss[image]'") from None
    return Image


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(path)
                labels.append(label)
    return paths, labels


def _decode(Image, path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file raises here
            rgb = img.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ... for bad files
        raise BadImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)


class _Files:
    """Decoded images by position, for a ``DataLoader``'s workers: ``(image, error message or '')``."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return _decode(_pil(), self.paths[i], self.size), ""
        except BadImageError as exc:
            return None, str(exc)


def _as_list(batch):
    return batch


def _decoded(Image, paths: list[Path], size: int, workers: int):
    """``(image or None, error)`` per path, in order."""
    if workers == 0:
        for path in paths:
            try:
                yield _decode(Image, path, size), ""
            except BadImageError as exc:
                yield None, str(exc)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_Files(paths, size), batch_size=64, num_workers=workers, collate_fn=_as_list)
    for batch in loader:
        yield from batch


def _read(Image, paths: list[Path], labels: list[int], size: int, skip: bool,
          workers: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    images = np.empty((len(paths), 3, size, size), np.uint8)
    kept, bad = [], 0
    for (image, error), label in zip(_decoded(Image, paths, size, workers), labels):
        if image is None:
            if not skip:
                raise BadImageError(error)
            bad += 1
            continue
        images[len(kept)] = image
        kept.append(label)
    x = images[:len(kept)].astype(np.float32) / np.float32(255.0)
    return x, np.asarray(kept, np.int64), bad


def read_image_folder(root: str | Path, *, image_size: int = 32, skip_bad_images: bool = False, workers: int = 0):
    """``(x_train, y_train, x_test, y_test)``: float32 images in [0, 1] ``(N, 3, S, S)`` and int64 labels.

    Raises:
        FileNotFoundError: ``root`` has no class folders, or no images in them.
        BadImageError: an image that cannot be decoded (unless ``skip_bad_images``).
        ImportError: Pillow is not installed.
    """
    from curriculoss.harness.data._common import _split

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0, got {workers!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a directory (expected one sub-folder of images per class)")
    Image = _pil()
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    classes = _class_folders(train_root)
    if not classes:
        raise FileNotFoundError(f"{str(train_root)!r} has no class sub-folders (expected one folder of images per class)")
    paths, labels = _files(train_root, classes)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(train_root)!r}")
    x, y, bad = _read(Image, paths, labels, image_size, skip_bad_images, workers)
    if split:
        unknown = sorted(set(_class_folders(root / "test")) - set(classes))
        if unknown:
            raise ValueError(f"{root / 'test'}: class folders {unknown} have no training folder in {train_root}")
        tpaths, tlabels = _files(root / "test", classes)
        x_te, y_te, bad_te = _read(Image, tpaths, tlabels, image_size, skip_bad_images, workers)
        bad += bad_te
    if bad:
        print(f"curriculoss: note: skipped {bad} unreadable image(s) under {root}", file=sys.stderr)
    if not split:
        if len(y) < 2:
            raise ValueError(f"{root}: need at least 2 readable images to split off a test set; got {len(y)}")
        x, y, x_te, y_te = _split(x, y, classification=True)
    return x, y, x_te, y_te
