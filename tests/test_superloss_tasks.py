"""SuperLoss on every task of the paper (Sec. 2.4): regression, detection, metric learning."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import lambertw as scipy_lambertw

import curriculoss
from curriculoss import contrastive_loss

# Eq. 3 as written (step='paper'), against the equations' references; the normalised step (the
# default) is tested in test_superloss.py and by test_contrastive_normalised_step below.
SuperLoss = functools.partial(curriculoss.SuperLoss, step="paper")
SuperContrastiveLoss = functools.partial(curriculoss.SuperContrastiveLoss, step="paper")


def reference_sl(loss: np.ndarray, tau: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 3-4 in numpy with scipy's Lambert W (an independent implementation)."""
    beta = np.maximum((loss - tau) / lam, -2 / math.e)
    # At the cap the argument is -1/e, where W = -1 exactly; scipy returns NaN for the double nearest
    # -1/e (it lies just below -1/e), so the cap's value is written out.
    w = np.where(beta <= -2 / math.e, -1.0, scipy_lambertw(np.maximum(beta / 2, -1 / math.e)).real)
    sigma = np.exp(-w)
    return (loss - tau) * sigma + lam * w**2, sigma


# --- regression ---------------------------------------------------------------------------------

def test_multi_output_regression_sums_outputs_per_sample():
    pred = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 3, dtype=torch.float64)
    per_sample = F.mse_loss(pred, target, reduction="none").sum(1)
    criterion = SuperLoss(tau=0.5, lam=1.0)
    out = criterion(per_sample)
    l = ((pred.detach() - target) ** 2).sum(1).numpy()
    sl, sigma = reference_sl(l, 0.5, 1.0)
    assert out.item() == pytest.approx(sl.mean(), rel=1e-10)
    out.backward()
    # d SL / d pred = sigma_i * 2 (pred - target) / N
    expected = torch.from_numpy(sigma)[:, None] * 2 * (pred.detach() - target) / 6
    torch.testing.assert_close(pred.grad, expected)


@pytest.mark.parametrize("scale", [1.0, 100.0, 10_000.0])
def test_running_threshold_is_homogeneous_for_losses_up_to_1e4(scale):
    # ell_2 losses of age regression range in [0, 10000] (Sec. 3.2): scaling the losses and lam together
    # leaves the confidences unchanged, with the running threshold doing the rest.
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(32, generator=gen, dtype=torch.float64) for _ in range(4)]
    a, b = SuperLoss(tau="ema", lam=0.5), SuperLoss(tau="ema", lam=0.5 * scale)
    for batch in batches:
        out_a, out_b = a(batch), b(batch * scale)
        torch.testing.assert_close(b.confidence, a.confidence)
        torch.testing.assert_close(out_b, out_a * scale)
    assert float(b.tau) == pytest.approx(float(a.tau) * scale, rel=1e-12)


def test_smooth_l1_regression_matches_reference():
    pred, target = torch.randn(40, dtype=torch.float64) * 3, torch.randn(40, dtype=torch.float64)
    l = F.smooth_l1_loss(pred, target, reduction="none")
    out = SuperLoss(tau=0.5, lam=1.0, reduction="sum")(l)
    assert out.item() == pytest.approx(reference_sl(l.numpy(), 0.5, 1.0)[0].sum(), rel=1e-10)


# --- detection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["avg", "ema"])
def test_detection_anchors_with_ignore_mask(mode):
    images, anchors, classes = 3, 50, 5
    gen = torch.Generator().manual_seed(0)
    criterion = SuperLoss(tau=mode, lam=1.0)
    ref_tau = None
    total, count = 0.0, 0
    for _ in range(3):
        logits = torch.randn(images, anchors, classes, generator=gen, dtype=torch.float64)
        target = torch.randint(0, classes, (images, anchors), generator=gen)
        ignore = torch.rand(images, anchors, generator=gen) < 0.3
        ce = F.cross_entropy(logits.reshape(-1, classes), target.reshape(-1), reduction="none").reshape(images, anchors)
        out = criterion(ce, mask=ignore)
        kept = ce[~ignore].numpy()
        if mode == "avg":
            total, count = total + kept.sum(), count + kept.size
            ref_tau = total / count
        else:
            ref_tau = kept.mean() if ref_tau is None else 0.9 * ref_tau + 0.1 * kept.mean()
        sl, _ = reference_sl(kept, ref_tau, 1.0)
        assert float(criterion.tau) == pytest.approx(ref_tau, rel=1e-12)
        assert out.item() == pytest.approx(sl.mean(), rel=1e-10)
        assert criterion.confidence.shape == (images, anchors)


def test_detection_with_focal_anchor_losses():
    from curriculoss import focal_loss

    logits = torch.randn(2 * 30, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (60,))
    fl = focal_loss(logits, target, reduction="none").reshape(2, 30)
    ignore = torch.zeros(2, 30, dtype=torch.bool)
    ignore[:, :5] = True
    out = SuperLoss(tau="avg")(fl, mask=ignore)
    out.backward()
    assert torch.all(logits.grad.reshape(2, 30, 4)[ignore] == 0)
    assert torch.isfinite(logits.grad).all()


# --- metric learning ----------------------------------------------------------------------------

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


def test_triplet_loss_with_plain_superloss():
    a, p, n = (torch.randn(10, 6, dtype=torch.float64) for _ in range(3))
    a.requires_grad_()
    l = F.triplet_margin_loss(a, p, n, margin=1.0, reduction="none")
    out = SuperLoss(tau="avg", reduction="sum")(l)
    assert out.item() == pytest.approx(reference_sl(l.detach().numpy(), l.mean().item(), 1.0)[0].sum(), rel=1e-10)
    out.backward()


def test_contrastive_errors():
    with pytest.raises(ValueError, match="margin"):
        SuperContrastiveLoss(margin=0)
    with pytest.raises(ValueError, match="x1 and x2"):
        contrastive_loss(torch.randn(3, 2), torch.randn(4, 2), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="label"):
        contrastive_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match="label"):
        contrastive_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(3))
