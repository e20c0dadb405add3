"""curriculoss.contrastive: the contrastive loss and SuperLoss on its pairs."""
import functools

import numpy as np
import pytest
import torch

import curriculoss
from curriculoss import contrastive_loss

from _helpers import superloss_reference as reference_sl


def test_contrastive_eval_mode_changes_no_state():
    criterion = curriculoss.SuperContrastiveLoss(tau="avg")
    gen = torch.Generator().manual_seed(1)
    criterion(torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen), torch.randint(0, 2, (16,)))
    before = {k: v.clone() for k, v in criterion.state_dict().items()}
    criterion.eval()
    for _ in range(10):
        criterion(torch.randn(16, 8, generator=gen) * 5, torch.randn(16, 8, generator=gen),
                  torch.randint(0, 2, (16,), generator=gen))
    assert all(torch.equal(v, before[k]) for k, v in criterion.state_dict().items())


SuperContrastiveLoss = functools.partial(curriculoss.SuperContrastiveLoss, step="paper")


def test_contrastive_loss_against_direct_formula():
    x1, x2 = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 4, dtype=torch.float64)
    label = torch.randint(0, 2, (20,))
    d = np.linalg.norm(x1.numpy() - x2.numpy(), axis=1)
    for squared in (False, True):
        pos, neg = d, np.maximum(1.5 - d, 0)
        ref = np.where(label.numpy() == 1, pos**2 if squared else pos, neg**2 if squared else neg)
        got = contrastive_loss(x1, x2, label, margin=1.5, squared=squared, reduction="none")
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_super_contrastive_uses_two_independent_thresholds():
    gen = torch.Generator().manual_seed(3)
    criterion = SuperContrastiveLoss(margin=2.0, lam=0.5, tau="avg", reduction="none")
    sums = {1: [0.0, 0], 0: [0.0, 0]}
    for _ in range(3):
        x1 = torch.randn(24, 5, generator=gen, dtype=torch.float64, requires_grad=True)
        x2 = torch.randn(24, 5, generator=gen, dtype=torch.float64)
        label = torch.randint(0, 2, (24,), generator=gen)
        out = criterion(x1, x2, label)
        d = np.linalg.norm(x1.detach().numpy() - x2.numpy(), axis=1)
        losses = {1: d, 0: np.maximum(2.0 - d, 0)}
        expected = np.empty(24)
        for y in (1, 0):
            sel = label.numpy() == y
            sums[y][0] += losses[y][sel].sum()
            sums[y][1] += sel.sum()
            tau = sums[y][0] / sums[y][1]
            expected[sel] = reference_sl(losses[y][sel], tau, 0.5)[0]
        assert float(criterion.positive.tau) == pytest.approx(sums[1][0] / sums[1][1], rel=1e-12)
        assert float(criterion.negative.tau) == pytest.approx(sums[0][0] / sums[0][1], rel=1e-12)
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-9)
        out.sum().backward()
        assert torch.isfinite(x1.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_contrastive_every_dtype_against_direct_formula(dtype):
    # Embeddings rounded to the dtype; the reference is float64 on the rounded values.
    gen = torch.Generator().manual_seed(5)
    x1 = torch.randn(32, 4, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    x2 = torch.randn(32, 4, generator=gen, dtype=torch.float64).to(dtype)
    label = torch.randint(0, 2, (32,), generator=gen)
    eps = torch.finfo(dtype).eps
    d = np.linalg.norm(x1.detach().double().numpy() - x2.double().numpy(), axis=1)
    pos, neg = d, np.maximum(2.0 - d, 0)
    ref = np.where(label.numpy() == 1, pos, neg)
    got = contrastive_loss(x1, x2, label, margin=2.0, reduction="none")
    assert got.dtype == dtype
    np.testing.assert_allclose(got.detach().double().numpy(), ref, rtol=2 * eps, atol=2 * eps)
    criterion = SuperContrastiveLoss(margin=2.0, lam=0.5, tau="avg", reduction="none")
    out = criterion(x1, x2, label)
    assert out.dtype == dtype and criterion.confidence.dtype == dtype
    assert criterion.positive.tau.dtype == torch.float64
    expected = np.empty(32)
    for y, losses in ((1, pos), (0, neg)):
        sel = label.numpy() == y
        expected[sel] = reference_sl(losses[sel], losses[sel].mean(), 0.5)[0]
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=8 * eps, atol=8 * eps)
    out.sum().backward()
    assert x1.grad.dtype == dtype and torch.isfinite(x1.grad).all()


def test_super_contrastive_fixed_thresholds_pair():
    criterion = SuperContrastiveLoss(margin=1.0, tau=(0.2, 0.1))
    criterion(torch.randn(8, 3), torch.randn(8, 3), torch.tensor([1, 0] * 4))
    assert float(criterion.positive.tau) == pytest.approx(0.2) and float(criterion.negative.tau) == pytest.approx(0.1)


def test_contrastive_errors():
    with pytest.raises(ValueError, match="margin"):
        SuperContrastiveLoss(margin=0)
    with pytest.raises(ValueError, match="x1 and x2"):
        contrastive_loss(torch.randn(3, 2), torch.randn(4, 2), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="label"):
        contrastive_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match="label"):
        contrastive_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(3))
