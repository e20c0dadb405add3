"""A folder of images, one sub-folder per class: the layout every vision user has.

::

    DIR/cat/001.png  DIR/dog/002.jpg ...                         (split off 20 %, seeded)
    DIR/train/cat/001.png ... DIR/test/cat/101.png ...           (the given split)

Classes are the sub-folder names in sorted order (the test split's folders must be among the
training split's); there must be two at least, and a lone `train/` (or `test/`) is refused rather than
read as one class of that name. An image whose header declares more than `MAX_PIXELS` pixels (or
none) is refused before it is decoded. Files with an image extension (PNG, JPEG, BMP, GIF, WebP, TIFF) are decoded with
Pillow (`pip install curriculoss[image]`), fully (so that a truncated file is found here, not in the
middle of an epoch), converted to RGB and resized to `image_size` x `image_size` (bilinear); other
files are ignored. A file Pillow cannot read, a truncated one, or one in a mode that has no RGB
conversion is an error naming the file, or, with `skip_bad_images`, skipped and counted on stderr.

In memory, the set is `N x 3 x S x S` float32 (50,000 images of 32 x 32 are 600 MB); with
`workers > 0` the files are decoded by that many `DataLoader` worker processes (same result, in
the same order). Streamed (`stream=True`, or `None` when the decoded set would not fit a quarter
of the given memory), the set is an `ImageFiles`: the paths, decoded again per training batch
by the harness's `DataLoader`. Either way every file is decoded once when the set is read: bad files
are found then, and the per-channel normalisation statistics come from the images' exact integer
pixel moments (`moment_stats`), so both modes train on identical inputs.
"""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "read_image_folder", "BadImageError", "ImageFiles", "moment_stats"]

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


#: The most pixels an image may declare (64 megapixels, 8192 x 8192): its header is read first, and a
#: larger image (a 13000 x 13000 PNG of a few kilobytes inflates to half a gigabyte) is refused undecoded.
MAX_PIXELS = 64 * 2 ** 20


def _check_size(path: Path, img) -> None:
    width, height = img.size
    if width * height == 0:
        raise BadImageError(f"{path}: an image of {width}x{height} pixels: no pixels")
    if width * height > MAX_PIXELS:
        raise BadImageError(f"{path}: its header declares {width}x{height} pixels, more than the "
                            f"{MAX_PIXELS // 2 ** 20} megapixels an image may have here; not decoded")


def _decode(Image, path: Path, size: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # Pillow's warning of a large image: _check_size refuses it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_size(path, img)
            img.load()  # decode now: a truncated file raises here
            rgb = img.convert("RGB")
    except BadImageError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ... for bad files
        raise BadImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)


class _Decoder:
    """Decoded images by position, for a `DataLoader`'s workers: `(image or None, error message or '')`."""

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
    """`(image or None, error)` per path, in order."""
    if workers == 0:
        for path in paths:
            try:
                yield _decode(Image, path, size), ""
            except BadImageError as exc:
                yield None, str(exc)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_Decoder(paths, size), batch_size=64, num_workers=workers, collate_fn=_as_list)
    for batch in loader:
        yield from batch


def _read(Image, paths: list[Path], labels: list[int], size: int, skip: bool, workers: int = 0,
          keep: bool = True) -> tuple[np.ndarray | None, list[Path], np.ndarray, np.ndarray, int]:
    """Decode every file once: `(uint8 images or None, kept paths, their labels, their moments, bad count)`.

    The moments (per image and channel: the sum and the sum of squares of the 0..255 pixel values,
    exact int64) give the normalisation statistics of any subset, the same in memory and streamed.
    With `keep=False` (streaming) the pixels are not kept."""
    images = np.empty((len(paths), 3, size, size), np.uint8) if keep else None
    moments = np.empty((len(paths), 2, 3), np.int64)
    kept, bad = [], 0
    for i, ((image, error), label) in enumerate(zip(_decoded(Image, paths, size, workers), labels)):
        if image is None:
            if not skip:
                raise BadImageError(error)
            bad += 1
            continue
        if keep:
            images[len(kept)] = image
        wide = image.reshape(3, -1).astype(np.int64)
        moments[len(kept)] = wide.sum(1), (wide * wide).sum(1)
        kept.append(i)
    n = len(kept)
    return (images[:n] if keep else None, [paths[i] for i in kept], np.asarray([labels[i] for i in kept], np.int64),
            moments[:n], bad)


def moment_stats(moments: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `(mean, std)` (float32, `(3,)`) of images in [0, 1] from their exact moments.

    `moments`: `(N, 2, 3)` int64 per-image sums of the 0..255 values and of their squares;
    `pixels`: H * W. mean = S / (255 m), var = (m Q - S^2) / (255 m)^2 with m = N H W, evaluated in
    exact integer arithmetic and rounded once: the same bits whichever order or process read the
    images, which is what makes streamed and in-memory training identical. A zero std becomes 1."""
    m = int(len(moments)) * pixels
    sums = [int(v) for v in moments[:, 0].sum(0)]  # int64 holds 255^2 x 2^40 pixels: no overflow in practice
    squares = [int(v) for v in moments[:, 1].sum(0)]
    mean = np.asarray([s / (255 * m) for s in sums], np.float64)
    var = np.asarray([(m * q - s * s) / (255 * m) ** 2 for s, q in zip(sums, squares)], np.float64)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class ImageFiles:
    """A streamed image set: the files, decoded one at a time (a map-style `torch` dataset).

    `files[i]` (an int) decodes image `i` and returns a float32 tensor `(3, S, S)`: the pixels in [0, 1],
    standardised by `normalisation` when it is set, computed exactly as the in-memory arrays
    are (`(uint8 / 255 - mean) / std` in float32), so a streamed run trains on the same bits.
    `len(files)`, `files.shape` (`(N, 3, S, S)`) and `files[a:b]` stand in for the array's. The files were
    decoded once when the set was read (bad files are found there, not mid-epoch).
    """

    def __init__(self, paths: list[Path], size: int, normalisation: tuple[np.ndarray, np.ndarray] | None = None):
        self.paths, self.size, self.normalisation = list(paths), int(size), normalisation

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    @property
    def nbytes(self) -> int:
        """The bytes the decoded float32 set would take in memory."""
        return math.prod(self.shape) * 4

    def __getitem__(self, i):
        if isinstance(i, slice):  # as an array's slice: the files in that range
            return ImageFiles(self.paths[i], self.size, self.normalisation)
        import torch

        x = _decode(_pil(), self.paths[i], self.size).astype(np.float32) / np.float32(255.0)
        if self.normalisation is not None:
            mean, std = self.normalisation
            x = (x - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, size={self.size})"


def _check_classes(root: Path, train_root: Path, classes: list[str]) -> None:
    """At least two classes; a lone `train/` (or `test/`) folder is a split without its other half."""
    if len(classes) >= 2:
        return
    if train_root == root and classes[0] in ("train", "test"):
        other = "test" if classes[0] == "train" else "train"
        raise ValueError(f"{root}: holds {classes[0]}/ but no {other}/, which would be read as a single class "
                         f"{classes[0]!r}; add {other}/ (one sub-folder of images per class in each), or put the "
                         f"class folders directly in {root}")
    raise ValueError(f"{train_root}: one class folder ({classes[0]!r}); a classifier needs at least 2 (one "
                     "sub-folder of images per class)")


def _listed(root: Path, split: bool) -> tuple[list[Path], list[int], list[Path], list[int]]:
    """The training images and labels, and the test ones (none without `train` and `test` folders)."""
    train_root = root / "train" if split else root
    classes = _class_folders(train_root)
    if not classes:
        raise FileNotFoundError(f"{str(train_root)!r} has no class sub-folders (expected one folder of images per class)")
    _check_classes(root, train_root, classes)
    paths, labels = _files(train_root, classes)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(train_root)!r}")
    tpaths, tlabels = [], []
    if split:
        unknown = sorted(set(_class_folders(root / "test")) - set(classes))
        if unknown:
            raise ValueError(f"{root / 'test'}: class folders {unknown} have no training folder in {train_root}")
        tpaths, tlabels = _files(root / "test", classes)
    return paths, labels, tpaths, tlabels


def read_image_folder(root: str | Path, *, image_size: int = 32, skip_bad_images: bool = False, workers: int = 0,
                      stream: bool | None = False, memory: int | None = None):
    """`(x_train, y_train, x_test, y_test, moments_train)`.

    In memory (`stream=False`): `x_*` are float32 images in [0, 1] `(N, 3, S, S)`. Streamed
    (`stream=True`): `x_*` are `ImageFiles` (no normalisation set yet). `stream=None`
    decides: stream when the decoded set (`N x 3 x S x S` float32) exceeds a quarter of `memory`
    bytes (in memory when `memory` is None). `moments_train`: the training images' exact pixel
    moments, `(N, 2, 3)` int64, for `moment_stats`. Labels are int64.

    Raises:
        FileNotFoundError: `root` has no class folders, or no images in them.
        BadImageError: an image that cannot be decoded (unless `skip_bad_images`).
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
    paths, labels, tpaths, tlabels = _listed(root, split)
    if stream is None:
        decoded = (len(paths) + len(tpaths)) * 3 * image_size * image_size * 4
        stream = memory is not None and decoded > memory // 4
    x, paths, y, moments, bad = _read(Image, paths, labels, image_size, skip_bad_images, workers, keep=not stream)
    if split:
        x_te, tpaths, y_te, _, bad_te = _read(Image, tpaths, tlabels, image_size, skip_bad_images, workers,
                                             keep=not stream)
        bad += bad_te
    if bad:
        print(f"curriculoss: note: skipped {bad} unreadable image(s) under {root}", file=sys.stderr)
    if not split:
        if len(y) < 2:
            raise ValueError(f"{root}: need at least 2 readable images to split off a test set; got {len(y)}")
        # Split positions, then gather: the same permutation as splitting the images themselves.
        i_tr, y, i_te, y_te = _split(np.arange(len(y)), y, classification=True)
        moments = moments[i_tr]
        if stream:
            tpaths, paths = [paths[i] for i in i_te], [paths[i] for i in i_tr]
        else:
            x, x_te = x[i_tr], x[i_te]
    if stream:
        return ImageFiles(paths, image_size), y, ImageFiles(tpaths, image_size), y_te, moments
    to_unit = lambda a: a.astype(np.float32) / np.float32(255.0)
    return to_unit(x), y, to_unit(x_te), y_te, moments
