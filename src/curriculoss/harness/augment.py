"""Batch-wise data augmentation on the device: the CIFAR protocol of the three papers.

`crop-flip` pads each image with 4 pixels of zeros, crops a random window of the original size and
flips it horizontally with probability 1/2 (He et al. 2016, Sec. 4.2, the protocol the SuperLoss, Data
Parameters and IMAE CIFAR experiments follow). It runs on a whole batch at once, on the batch's device,
from a generator the caller seeds, so that a resumed run replays the same crops and flips.

The training images are already standardised per channel; "zero" padding means a black pixel of the
raw image, which is `-mean / std` after standardisation, so the padding value is passed per channel.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AUGMENTS", "crop_flip", "augment"]

#: The names `augment` knows.
AUGMENTS = ("none", "crop-flip")


def crop_flip(x: Tensor, generator: torch.Generator | None = None, *, padding: int = 4,
              fill: Tensor | None = None) -> Tensor:
    """Random crop of `x`'s size from `x` padded by `padding` pixels, then a random horizontal flip.

    Args:
        x: images `(B, C, H, W)`.
        generator: the random source (on `x`'s device); `None` uses the global one.
        padding: pixels added on each side before cropping (4 in the papers).
        fill: padding value per channel `(C,)` (default 0).

    Returns:
        the augmented batch, same shape, dtype and device as `x`.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip needs images (B, C, H, W); got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    dev = x.device
    padded = x.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    if fill is not None:
        padded += fill.to(dev, x.dtype).view(1, c, 1, 1)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    # Offsets in [0, 2 * padding]: the top-left corner of the window in the padded image.
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.arange(w, device=dev)
    # Flipping the crop = reading its columns right to left.
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + ox[:, None]  # (B, W)
    batch = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def augment(name: str, x: Tensor, generator: torch.Generator | None = None, *, fill: Tensor | None = None) -> Tensor:
    """`x` augmented by the method `name` (one of `AUGMENTS`)."""
    if name == "none":
        return x
    if name == "crop-flip":
        return crop_flip(x, generator, fill=fill)
    raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}; got {name!r}")
