"""IMAE (Wang et al., *Improving MAE against CCE under Label Noise*) against independent references.

- the forward value against MAE, 2 (1 - p_y) (Eq. 11), recomputed with mpmath at 60 digits;
- the gradient against the paper's definition (Eqs. 18, 21, 22): MAE's gradient direction
  (p - e_y) / ||p - e_y||_1 rescaled to L1 norm exp(T p_y (1 - p_y)), recomputed with mpmath, including
  extreme logits where float64 itself underflows;
- a finite-difference gradcheck: the IMAE gradient field is the true gradient of the potential
  Phi(F(z)), F = (logsumexp(z_{j != y}) - z_y) / 2 = log((1 - p_y) / p_y) / 2 and
  Phi(F) = int_0^F exp(T / (4 cosh^2 u)) du (since p_y (1 - p_y) = 1 / (4 cosh^2 F) and grad F is MAE's
  unit-L1 direction), which scipy integrates independently of the library;
- the weighting variances of Eqs. 23-24 / Table 4 by quadrature of the library's ``sample_weight``.
"""
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.integrate import quad

from curriculoss import IMAE, imae, sample_weight

from _helpers import ALL_DTYPES, assert_input_errors, random_case

mpmath.mp.dps = 60


# ----------------------------------------------------------------------------------------------------------
# independent references
# ----------------------------------------------------------------------------------------------------------


def mp_reference(z: np.ndarray, y: np.ndarray, T: float):
    """Per sample: the MAE value 2 (1 - p_y), the weight exp(T p_y (1 - p_y)) and the IMAE gradient
    w * (p - e_y) / ||p - e_y||_1 of the per-sample loss, all from the paper's formulas in 60-digit
    arithmetic (so p_y -> 1, p_y -> 0 and +-1e4 logits are exact to double precision)."""
    B, C = z.shape
    loss = np.empty(B)
    weight = np.empty(B)
    grad = np.empty((B, C))
    for i in range(B):
        zs = [mpmath.mpf(float(v)) for v in z[i]]
        m = max(zs)
        e = [mpmath.exp(v - m) for v in zs]
        s = mpmath.fsum(e)
        p = [v / s for v in e]
        yi = int(y[i])
        one_minus_py = mpmath.fsum(p[j] for j in range(C) if j != yi)  # 1 - p_y without cancellation
        loss[i] = float(2 * one_minus_py)
        w = mpmath.exp(T * p[yi] * one_minus_py)
        weight[i] = float(w)
        # p - e_y; its y-th entry p_y - 1 is -(1 - p_y), taken without cancellation
        diff = [-one_minus_py if j == yi else p[j] for j in range(C)]
        n1 = mpmath.fsum(abs(d) for d in diff)
        grad[i] = [float(w * d / n1) for d in diff]
    return loss, weight, grad


def np_mae_value(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """2 (1 - p_y) in float64 numpy, with a stable softmax."""
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return 2.0 * (1.0 - p[np.arange(len(y)), y])


def imae_grad(z: torch.Tensor, y: torch.Tensor, T: float, reduction: str = "sum", upstream=None, **kw):
    """The gradient of ``imae``; Eq. 22 read literally (``variant='paper'``) unless ``kw`` says otherwise."""
    kw.setdefault("variant", "paper")
    z = z.detach().clone().requires_grad_()
    out = imae(z, y, T=T, reduction=reduction, **kw)
    (g,) = torch.autograd.grad(out, z, grad_outputs=upstream)
    return out.detach(), g


def extreme_cases(dtype: torch.dtype):
    """Logit rows with p_y -> 1, p_y -> 0, exact ties and +-1e4 entries; targets alongside."""
    rows = [
        ([1e4, -1e4, 0.0, 3.0], 0),  # p_y = 1 in any float: 1 - p_y ~ e^-1e4
        ([1e4, -1e4, 0.0, 3.0], 1),  # p_y ~ e^-2e4: 0 in any float
        ([1e4, -1e4, 0.0, 3.0], 2),
        ([-1e4, -1e4, -1e4, -1e4], 3),  # ties at -1e4
        ([0.0, 0.0, 0.0, 0.0], 0),  # ties: p_y = 1/4
        ([50.0, 0.0, 0.0, 0.0], 0),  # 1 - p_y ~ 6e-22: below float64's resolution of 1
        ([30.0, 1.0, -2.0, 0.5], 0),  # 1 - p_y ~ 5e-13
        ([-40.0, 0.0, 0.0, 0.0], 0),  # p_y ~ 1e-18
        ([1e4, 1e4, -1e4, 0.0], 0),  # two tied winners: p_y = 1/2 exactly
        ([8.0, 8.0 - math.log(3.0), -1e4, -1e4], 0),  # p_y = 3/4
    ]
    z = torch.tensor([r for r, _ in rows], dtype=dtype)
    y = torch.tensor([t for _, t in rows])
    return z, y


def summed_grad_and_reference(z: torch.Tensor, y: torch.Tensor, T: float):
    """The weights and the gradient of `mp_reference`, and the gradient of ``imae(..., reduction='sum')`` in
    float64 numpy, after checking that it came in the dtype of `z`."""
    _, w_ref, g_ref = mp_reference(z.double().numpy(), y.numpy(), T)
    _, g = imae_grad(z, y, T, reduction="sum")
    assert g.dtype == z.dtype
    return w_ref, g_ref, g.double().numpy()


TS = [0.0, 0.5, 8.0, 16.0]


# ----------------------------------------------------------------------------------------------------------
# 1. forward value
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_forward_is_mae_value(reduction):
    z, y = random_case(32, 7, 3.0, seed=1)
    ref = np_mae_value(z.numpy(), y.numpy())
    ref = {"none": ref, "mean": ref.mean(), "sum": ref.sum()}[reduction]
    out = imae(z, y, T=8.0, reduction=reduction)
    assert out.dtype == torch.float64
    assert out.shape == (() if reduction != "none" else (32,))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-14)
    # the module agrees with the functional form, for any T (T only changes the gradient)
    np.testing.assert_allclose(IMAE(T=0.5, reduction=reduction)(z, y).numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_forward_extreme_logits(dtype):
    z, y = extreme_cases(dtype)
    loss_ref, _, _ = mp_reference(z.double().numpy(), y.numpy(), 8.0)
    out = imae(z, y, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(out.double().numpy(), loss_ref, rtol=8 * eps, atol=8 * eps)


# ----------------------------------------------------------------------------------------------------------
# 2. gradient: MAE's direction, L1 norm exp(T p (1 - p)) (Eqs. 18, 21, 22)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_random_logits(T, dtype):
    z, y = random_case(24, 6, 2.5, seed=int(T * 10) + 3, dtype=dtype)
    w_ref, g_ref, g = summed_grad_and_reference(z, y, T)
    rtol = 1e-11 if dtype == torch.float64 else 2e-5
    # per-sample L1 norm is the weight of Eq. 21 ...
    np.testing.assert_allclose(np.abs(g).sum(axis=1), w_ref, rtol=rtol)
    # ... and the vector is MAE's direction times it (Eq. 22)
    np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * w_ref.max() * 1e-2)
    # the direction itself: Eq. 18 divided by its L1 norm (Eq. 20), where p (1-p) is not tiny
    p = torch.softmax(z.double(), 1).numpy()
    onehot = np.eye(z.shape[1])[y.numpy()]
    py = p[np.arange(len(y)), y.numpy()]
    mae_grad = 2 * py[:, None] * (p - onehot)  # Eq. 18
    w_mae = 4 * py * (1 - py)  # Eq. 20
    np.testing.assert_allclose(np.abs(mae_grad).sum(1), w_mae, rtol=1e-12)
    np.testing.assert_allclose(g / np.abs(g).sum(1, keepdims=True), mae_grad / w_mae[:, None], rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_gradient_extreme_logits(T, dtype):
    z, y = extreme_cases(dtype)
    w_ref, g_ref, g = summed_grad_and_reference(z, y, T)
    assert np.isfinite(g).all(), "no NaN / inf (0/0) at p_y -> 0 or 1"
    eps = torch.finfo(dtype).eps
    # the L1 norm is the weight even where p_y (1 - p_y) underflows (weight 1, direction finite)
    np.testing.assert_allclose(np.abs(g).sum(axis=1), w_ref, rtol=16 * eps)
    np.testing.assert_allclose(g, g_ref, rtol=16 * eps, atol=16 * eps * w_ref.max())
    # the target's slot is always -w/2 (half the L1 mass), the others are >= 0
    rows = np.arange(len(y))
    np.testing.assert_allclose(g[rows, y.numpy()], -w_ref / 2, rtol=16 * eps)
    mask = np.ones_like(g, dtype=bool)
    mask[rows, y.numpy()] = False
    assert (g[mask] >= 0).all()


@pytest.mark.parametrize("T", [0.5, 8.0])
def test_gradient_reductions_and_upstream(T):
    z, y = random_case(10, 5, 2.0, seed=7)
    B = z.shape[0]
    _, _, g_ref = mp_reference(z.numpy(), y.numpy(), T)
    _, g_sum = imae_grad(z, y, T, "sum")
    _, g_mean = imae_grad(z, y, T, "mean")
    np.testing.assert_allclose(g_sum.numpy(), g_ref, rtol=1e-11)
    np.testing.assert_allclose(g_mean.numpy(), g_ref / B, rtol=1e-11)
    # 'none' with an upstream gradient v: row i is scaled by v_i
    v = torch.linspace(-2.0, 3.0, B, dtype=torch.float64)
    _, g_none = imae_grad(z, y, T, "none", upstream=v)
    np.testing.assert_allclose(g_none.numpy(), g_ref * v.numpy()[:, None], rtol=1e-11, atol=1e-15)
    # scalar upstream for the reduced forms
    _, g_mean3 = imae_grad(z, y, T, "mean", upstream=torch.tensor(3.0, dtype=torch.float64))
    np.testing.assert_allclose(g_mean3.numpy(), 3 * g_ref / B, rtol=1e-11)
    # the module, all three reductions
    for reduction, scale in (("sum", 1.0), ("mean", 1.0 / B)):
        zz = z.clone().requires_grad_()
        IMAE(T=T, reduction=reduction, variant="paper")(zz, y).backward()
        np.testing.assert_allclose(zz.grad.numpy(), g_ref * scale, rtol=1e-11)
    zz = z.clone().requires_grad_()
    IMAE(T=T, reduction="none", variant="paper")(zz, y).backward(v)
    np.testing.assert_allclose(zz.grad.numpy(), g_ref * v.numpy()[:, None], rtol=1e-11, atol=1e-15)


def test_gradient_T0_is_unit_l1_and_T_scales_only_magnitude():
    z, y = random_case(16, 4, 2.0, seed=11)
    _, g0 = imae_grad(z, y, 0.0)
    np.testing.assert_allclose(g0.abs().sum(1).numpy(), np.ones(16), rtol=1e-13)
    _, g8 = imae_grad(z, y, 8.0)
    p = torch.softmax(z, 1).numpy()[np.arange(16), y.numpy()]
    np.testing.assert_allclose(g8.numpy(), g0.numpy() * np.exp(8 * p * (1 - p))[:, None], rtol=1e-12)


def test_module_confidence_is_weight():
    z, y = random_case(12, 5, 2.0, seed=5)
    m = IMAE(T=8.0)
    m(z, y)
    _, w_ref, _ = mp_reference(z.numpy(), y.numpy(), 8.0)
    assert m.confidence.shape == (12,) and not m.confidence.requires_grad
    np.testing.assert_allclose(m.confidence.numpy(), w_ref, rtol=1e-12)
    m(z.float(), y)
    assert m.confidence.dtype == torch.float32
    np.testing.assert_allclose(m.confidence.double().numpy(), w_ref, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# 2b. the default: the authors' Caffe layer (UnifiedWeightLoss)
# ----------------------------------------------------------------------------------------------------------


def caffe_unified_weight_layer(z: np.ndarray, y: np.ndarray, T: float, lamda_p: float = 1.0, top_diff: float = 1.0):
    """A port, loop for loop, of the authors' ``UnifiedWeightLossLayer`` (Forward_cpu / Backward_cpu, commit
    5f39760 of github.com/XinshaoAmosWang/Improving-Mean-Absolute-Error-against-CCE), in the dtype of ``z``.

    Returns (reported loss, bottom_diff). softmaxT(x, T, base) = base ** (T * x)."""
    dt = z.dtype.type
    B, C = z.shape
    prob = np.empty_like(z)
    for i in range(B):  # Caffe's SoftmaxLayer: subtract the max, exp, divide by the sum
        e = np.exp(z[i] - z[i].max())
        prob[i] = e / e.sum()
    def softmaxT(x, t, base):
        return dt(base) ** (dt(t) * dt(x))

    def weight_of(p):  # the same two lines in Forward_cpu and Backward_cpu
        temp = softmaxT(lamda_p, 1, p)
        return softmaxT(dt(T) * temp, dt(1) - p, 2.718281828)

    sum_weight = dt(1e-8)
    loss = dt(0)
    for i in range(B):
        p = prob[i, y[i]]
        weight = weight_of(p)
        loss -= weight * np.log(max(p, np.finfo(np.float32).tiny))
        sum_weight += weight
    diff = prob.copy()
    for i in range(B):
        p = prob[i, y[i]]
        weight = weight_of(p)
        diff[i, y[i]] -= dt(1)
        for c in range(C):
            diff[i, c] /= dt(2) - dt(2) * p + dt(1e-6)
            diff[i, c] *= weight
    diff *= dt(top_diff) / sum_weight
    return loss / sum_weight, diff


def _authors_cases(dtype):
    z, y = random_case(20, 6, 2.5, seed=31, dtype=torch.float64)
    rows = torch.tensor([
        [60.0, -60.0, 0.0, 0.0, 0.0, 0.0],    # p_y rounds to 1 in float32 and float64
        [-60.0, 60.0, 0.0, 0.0, 0.0, 0.0],    # p_y rounds to 0
        [16.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # 1 - p_y ~ 7e-7, where the damping acts
        [9.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ], dtype=torch.float64)
    z = torch.cat([z, rows]).to(dtype)
    y = torch.cat([y, torch.tensor([0, 0, 0, 0])])
    return z, y


@pytest.mark.parametrize("T", [8.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_default_gradient_is_the_authors_layer(T, dtype):
    z, y = _authors_cases(dtype)
    _, ref = caffe_unified_weight_layer(z.numpy(), y.numpy(), T)
    _, g = imae_grad(z, y, T, reduction="mean", variant="authors")
    g = g.double().numpy()
    # float64: the bar, 1e-6 of the largest entry; float32: the layer's own rounding of 1 - p_y
    tol = (1e-6 if dtype == torch.float64 else 1e-4) * np.abs(ref).max()
    np.testing.assert_allclose(g, ref, rtol=0, atol=tol)
    # the defaults are the authors' (functional and module), and 'mean' is the default reduction
    zz = z.clone().requires_grad_()
    imae(zz, y, T=T).backward()
    np.testing.assert_allclose(zz.grad.double().numpy(), ref, rtol=0, atol=tol)
    zz = z.clone().requires_grad_()
    IMAE(T=T)(zz, y).backward()
    np.testing.assert_allclose(zz.grad.double().numpy(), ref, rtol=0, atol=tol)


def test_authors_layer_fitted_sample_stops_pulling():
    """p_y -> 1: the authors' gradient vanishes, the paper's keeps L1 norm w >= 1 (the reason for the default)."""
    z = torch.tensor([[40.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    _, g_auth = imae_grad(z, y, 8.0, reduction="sum", variant="authors")
    _, g_paper = imae_grad(z, y, 8.0, reduction="sum", variant="paper")
    assert g_auth[0].abs().sum() < 1e-9 * g_auth[1].abs().sum()
    assert g_paper[0].abs().sum().item() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("T", [8.0, 2.0])
def test_authors_reductions_and_options(T):
    z, y = _authors_cases(torch.float64)
    B = z.shape[0]
    _, ref = caffe_unified_weight_layer(z.numpy(), y.numpy(), T)
    tol = 1e-6 * np.abs(ref).max()
    # 'sum' is B times 'mean'; 'none' reduced by the user's mean (any upstream) gives the layer again
    _, g_sum = imae_grad(z, y, T, "sum", variant="authors")
    np.testing.assert_allclose(g_sum.numpy(), B * ref, rtol=0, atol=B * tol)
    zz = z.clone().requires_grad_()
    imae(zz, y, T=T, reduction="none").mean().backward()
    np.testing.assert_allclose(zz.grad.numpy(), ref, rtol=0, atol=tol)
    _, g3 = imae_grad(z, y, T, "mean", upstream=torch.tensor(3.0, dtype=torch.float64), variant="authors")
    np.testing.assert_allclose(g3.numpy(), 3 * ref, rtol=0, atol=3 * tol)
    # the two arguments compose: the paper variant with the authors' eps and normalisation is the default
    _, g_mix = imae_grad(z, y, T, "mean", variant="paper", eps=1e-6, normalize="weights")
    np.testing.assert_allclose(g_mix.numpy(), ref, rtol=0, atol=tol)
    # normalize='batch' with the authors' damping: the layer's per-sample terms summed over B, not over S
    w = np.exp(T * np.array([p * (1 - p) for p in torch.softmax(z, 1)[torch.arange(B), y].numpy()]))
    S = 1e-8 + w.sum()
    _, g_batch = imae_grad(z, y, T, "mean", variant="authors", normalize="batch")
    np.testing.assert_allclose(g_batch.numpy(), ref * S / B, rtol=0, atol=tol * S / B)
    # eps=0 with the weight normalisation: the paper's unit direction times w_i / S
    _, _, g_paper = mp_reference(z.numpy(), y.numpy(), T)
    _, g_norm = imae_grad(z, y, T, "mean", variant="authors", eps=0.0)
    np.testing.assert_allclose(g_norm.numpy(), g_paper / S, rtol=1e-9, atol=1e-14)
    # the forward value is MAE in both variants (the layer reports weighted CE, which does not train)
    for variant in ("authors", "paper"):
        np.testing.assert_allclose(imae(z, y, T=T, reduction="none", variant=variant).numpy(),
                                   np_mae_value(z.numpy(), y.numpy()), rtol=1e-12, atol=1e-14)


def test_authors_weights_normalisation_large_T_is_finite():
    z, y = random_case(8, 5, 1.0, seed=3)
    _, g = imae_grad(z, y, 300.0, "mean", variant="authors")
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("kw", [{"variant": "caffe"}, {"variant": "x"}, {"normalize": "sum"}, {"eps": -1e-6}], ids=str)
def test_variant_errors(kw):
    """The function and the module refuse the same settings, naming the argument."""
    z, y = random_case(4, 3, 1.0, seed=2)
    (name,) = kw
    with pytest.raises(ValueError, match=name):
        imae(z, y, **kw)
    with pytest.raises(ValueError, match=name):
        IMAE(**kw)


# ----------------------------------------------------------------------------------------------------------
# 3. gradcheck against finite differences of an independent potential
# ----------------------------------------------------------------------------------------------------------


def _phi(F: float, T: float) -> float:
    """int_0^F exp(T / (4 cosh^2 u)) du: Phi' = w_IMAE at p_y = 1 / (1 + exp(2F))."""
    if T == 0.0:
        return F
    val, _ = quad(lambda u: math.exp(T / (4.0 * math.cosh(u) ** 2)), 0.0, F, epsabs=1e-13, epsrel=1e-12, limit=200)
    return val


def potential_with_imae_grad(z: torch.Tensor, y: torch.Tensor, T: float, reduction: str = "sum") -> torch.Tensor:
    """Value: sum_i Phi(F_i(z)), computed in numpy/scipy; gradient: whatever ``imae`` backpropagates."""
    zn = z.detach().numpy()
    yn = y.numpy()
    F = []
    for i in range(zn.shape[0]):
        others = np.delete(zn[i], yn[i])
        mx = others.max()
        lse = mx + math.log(np.exp(others - mx).sum())
        F.append(0.5 * (lse - zn[i, yn[i]]))
    value = sum(_phi(f, T) for f in F) / (len(F) if reduction == "mean" else 1)
    out = imae(z, y, T=T, reduction=reduction, variant="paper")
    return out - out.detach() + torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("T,reduction", [(0.0, "sum"), (0.5, "sum"), (8.0, "sum"), (16.0, "sum"), (8.0, "mean")])
def test_gradcheck_against_potential(T, reduction):
    z, y = random_case(3, 4, 1.5, seed=21)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: potential_with_imae_grad(x, y, T, reduction), (z,), eps=1e-6,
                                    atol=1e-6, rtol=1e-5)


def test_gradcheck_sample_weight():
    p = torch.rand(8, dtype=torch.float64).requires_grad_()
    for loss in ("cce", "mae", "imae"):
        assert torch.autograd.gradcheck(lambda x: sample_weight(x, loss, T=8.0), (p,))


def test_double_backward_is_refused():
    """Documented: IMAE is differentiable once (a custom backward, no double backward)."""
    z, y = random_case(4, 3, 1.0, seed=2)
    z.requires_grad_()
    (g,) = torch.autograd.grad(imae(z, y), z, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ----------------------------------------------------------------------------------------------------------
# sample_weight: Eqs. 19-21 and Table 4 / Eqs. 23-24
# ----------------------------------------------------------------------------------------------------------


def test_sample_weight_formulas():
    p = np.linspace(0.0, 1.0, 101)
    pt = torch.tensor(p)
    np.testing.assert_allclose(sample_weight(pt, "cce").numpy(), 2 * (1 - p), rtol=1e-14)  # Eq. 19
    np.testing.assert_allclose(sample_weight(pt, "mae").numpy(), 4 * p * (1 - p), rtol=1e-14, atol=1e-16)  # Eq. 20
    for T in (0.0, 0.5, 8.0, 16.0):
        np.testing.assert_allclose(sample_weight(pt, "imae", T=T).numpy(), np.exp(T * p * (1 - p)), rtol=1e-14)
    # default: IMAE with T = 8
    np.testing.assert_allclose(sample_weight(pt).numpy(), np.exp(8 * p * (1 - p)), rtol=1e-14)
    # numbers, and shapes are kept
    assert sample_weight(0.5, "imae", T=8.0).item() == pytest.approx(math.exp(2.0))
    assert sample_weight(torch.rand(2, 3, dtype=torch.float64), "mae").shape == (2, 3)
    # the weights are the L1 norms of the CCE and MAE gradients w.r.t. the logits (Eqs. 15, 18)
    z, y = random_case(16, 5, 2.0, seed=3)
    zz = z.clone().requires_grad_()
    torch.nn.functional.cross_entropy(zz, y, reduction="sum").backward()
    py = torch.softmax(z, 1)[torch.arange(16), y]
    np.testing.assert_allclose(zz.grad.abs().sum(1).numpy(), sample_weight(py, "cce").numpy(), rtol=1e-12)
    zz = z.clone().requires_grad_()
    (2 * (1 - torch.softmax(zz, 1)[torch.arange(16), y])).sum().backward()
    np.testing.assert_allclose(zz.grad.abs().sum(1).numpy(), sample_weight(py, "mae").numpy(), rtol=1e-12)


def _variance_by_quadrature(loss: str, T: float = 8.0) -> float:
    """Eqs. 23-24 with p ~ U[0, 1], integrating the library's sample_weight with scipy."""
    w = lambda p: sample_weight(torch.tensor(p, dtype=torch.float64), loss, T=T).item()
    m1, _ = quad(w, 0.0, 1.0, epsabs=1e-13, epsrel=1e-13)
    m2, _ = quad(lambda p: w(p) ** 2, 0.0, 1.0, epsabs=1e-13, epsrel=1e-13)
    return m2 - m1 * m1


TABLE4 = [(16.0, 354.113), (8.0, 4.546), (4.0, 0.299), (2.0, 0.040), (1.0, 0.007), (0.5, 0.002), (0.0, 0.0)]


@pytest.mark.parametrize("T,quoted", TABLE4)
def test_table4_variances(T, quoted):
    var = _variance_by_quadrature("imae", T)
    assert round(var, 3) == pytest.approx(quoted, abs=1e-12)
    # and the closed form of Eq. 26 (supplementary), independently of the library
    if T > 0:
        closed = (math.sqrt(math.pi) * math.erf(math.sqrt(2 * T) / 2) * math.exp(T / 2) / math.sqrt(2 * T)
                  - math.pi * math.erf(math.sqrt(T) / 2) ** 2 * math.exp(T / 2) / T)
        assert var == pytest.approx(closed, rel=1e-9, abs=1e-12)


def test_mae_and_cce_variances():
    assert round(_variance_by_quadrature("mae"), 4) == 0.0889  # errata 3 / Fig. 1: 0.09
    assert _variance_by_quadrature("mae") == pytest.approx(4.0 / 45.0, rel=1e-10)
    assert _variance_by_quadrature("cce") == pytest.approx(1.0 / 3.0, rel=1e-10)
    assert round(_variance_by_quadrature("imae", 8.0), 2) == 4.55  # Fig. 1


# ----------------------------------------------------------------------------------------------------------
# 5. dtypes, devices, compile, errors
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_low_precision_inputs(dtype, reduction):
    z32, y = random_case(16, 6, 3.0, seed=4, dtype=torch.float32)
    z32 = torch.cat([z32, torch.tensor([[60.0, -60.0, 0, 0, 0, 0], [-60.0, 60.0, 0, 0, 0, 0]])])
    y = torch.cat([y, torch.tensor([0, 0])])
    z = z32.to(dtype).requires_grad_()
    out = imae(z, y, T=8.0, reduction=reduction)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.backward(torch.ones_like(out))
    assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()
    # computed in float32 from the rounded inputs
    zr = z.detach().float().requires_grad_()
    out32 = imae(zr, y, T=8.0, reduction=reduction)
    out32.backward(torch.ones_like(out32))
    torch.testing.assert_close(out, out32.to(dtype))
    torch.testing.assert_close(z.grad, zr.grad.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_largest_T_keeps_gradients_finite(dtype):
    # p_y = 1/2 exactly (two tied winners) gives the largest weight, exp(T/4)
    z = torch.tensor([[1e4, 1e4, -1e4, 0.0]], dtype=dtype)
    _, g = imae_grad(z, torch.tensor([0]), 300.0)
    assert torch.isfinite(g).all()
    assert g.abs().sum().item() == pytest.approx(math.exp(75.0), rel=1e-5)


def test_meta_device_forward():
    z = torch.empty(5, 7, device="meta")
    y = torch.empty(5, dtype=torch.long, device="meta")
    assert imae(z, y, reduction="none").shape == (5,)
    assert imae(z, y).shape == ()
    assert imae(z.half(), y).dtype == torch.float16


def test_compile_matches_eager():
    z, y = random_case(8, 5, 2.0, seed=9, dtype=torch.float32)
    fn = torch.compile(lambda a, b: imae(a, b, T=8.0, reduction="mean"), fullgraph=True, backend="aot_eager")
    z1 = z.clone().requires_grad_()
    z2 = z.clone().requires_grad_()
    out_c = fn(z1, y)
    out_e = imae(z2, y, T=8.0, reduction="mean")
    torch.testing.assert_close(out_c, out_e)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(z1.grad, z2.grad)


def test_int32_target_and_non_contiguous_logits():
    z, y = random_case(6, 5, 2.0, seed=12)
    _, _, g_ref = mp_reference(z.numpy(), y.numpy(), 8.0)
    zt = z.t().contiguous().t().requires_grad_()  # column-major
    assert not zt.is_contiguous()
    out = imae(zt, y.int(), reduction="sum", variant="paper")
    out.backward()
    np.testing.assert_allclose(out.item(), np_mae_value(z.numpy(), y.numpy()).sum(), rtol=1e-12)
    np.testing.assert_allclose(zt.grad.numpy(), g_ref, rtol=1e-11)


def test_empty_batch():
    z = torch.empty(0, 4, dtype=torch.float64, requires_grad=True)
    y = torch.empty(0, dtype=torch.long)
    out = imae(z, y, reduction="sum")
    assert out.item() == 0.0
    out.backward()
    assert z.grad.shape == (0, 4)
    assert imae(z, y, reduction="none").shape == (0,)


def test_errors_name_the_argument():
    # also one class only (IMAE needs two) and a numpy array
    assert_input_errors(imae, lambda z, y: [(ValueError, "logits", torch.randn(4, 1), torch.zeros(4, dtype=torch.long)),
                                            (TypeError, "logits", z.numpy(), y)])
    z = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    for bad in (-0.5, float("nan"), float("inf"), 360.0, 1e6):
        with pytest.raises(ValueError, match="T"):
            imae(z, y, T=bad)
        with pytest.raises(ValueError, match="T"):
            IMAE(T=bad)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="T"):
            sample_weight(torch.tensor([0.5]), "imae", T=bad)
    # T = 360: the weight exp(T/4) = exp(90) overflows float32 and the gradient was inf
    for bad in (360.0, 1e6):
        with pytest.raises(ValueError, match=r"T must be a finite number in \[0.0, 300.0\]"):
            imae(z, y, T=bad)
    with pytest.raises(TypeError, match="T"):
        imae(z, y, T="8")
    with pytest.raises(ValueError, match="reduction"):
        IMAE(reduction="batchmean")
    with pytest.raises(ValueError, match="loss"):
        sample_weight(torch.tensor([0.5]), "gce")
    with pytest.raises(TypeError, match="p"):
        sample_weight(torch.tensor([1, 0]), "mae")


def test_defaults_documented():
    import inspect

    assert inspect.signature(imae).parameters["T"].default == 8.0
    assert inspect.signature(imae).parameters["reduction"].default == "mean"
    assert IMAE().T == 8.0 and IMAE().reduction == "mean"
    assert inspect.signature(sample_weight).parameters["T"].default == 8.0
    doc = imae.__doc__ + IMAE.__doc__
    assert "0.5" in doc and "8" in doc and "clean" in doc and "noisy" in doc
