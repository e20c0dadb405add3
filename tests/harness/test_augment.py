"""curriculoss.harness.augment: crop-flip against a numpy pad, crop and flip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from curriculoss.harness import augment
from curriculoss.harness.train import TrainConfig, train


def test_crop_flip_matches_numpy_pad_crop_flip(device):
    x = torch.randn(16, 3, 8, 8, device=device)
    fill = torch.tensor([-1.0, 0.5, 2.0], device=device)
    out = augment.crop_flip(x, torch.Generator(device=device).manual_seed(3), fill=fill)
    # The same draws, in the documented order, then each image by hand with numpy.
    g = torch.Generator(device=device).manual_seed(3)
    oy = torch.randint(0, 9, (16,), generator=g, device=device).cpu().numpy()
    ox = torch.randint(0, 9, (16,), generator=g, device=device).cpu().numpy()
    flip = (torch.rand(16, generator=g, device=device) < 0.5).cpu().numpy()
    xs, fs = x.cpu().numpy(), fill.cpu().numpy()
    for i in range(16):
        padded = np.stack([np.pad(xs[i, c], 4, constant_values=fs[c]) for c in range(3)])
        crop = padded[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        if flip[i]:
            crop = crop[:, :, ::-1]
        np.testing.assert_array_equal(out[i].cpu().numpy(), crop)
    assert 0 < flip.sum() < 16 and len(set(oy)) > 1  # the draws vary


def test_crop_flip_is_seeded():
    x = torch.randn(4, 3, 32, 32)
    a = augment.crop_flip(x, torch.Generator().manual_seed(7))
    b = augment.crop_flip(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == x.shape
    with pytest.raises(ValueError, match="augment must be one of"):
        augment.augment("cutout", x)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment.crop_flip(torch.randn(4, 10))


def test_augment_needs_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(40, 5)).astype(np.float32), y=rng.integers(0, 2, 40))
    cfg = TrainConfig(dataset="npz", data_dir=str(tmp_path / "f.npz"), epochs=1, augment="crop-flip")
    with pytest.raises(ValueError, match="needs image inputs"):
        train(cfg, progress=False)
