"""SuperLoss against independent references: brute-force minimisation of Eq. 1, the paper's
properties (Sec. 2.2), finite differences, and plain-Python recomputations of the running state."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

import curriculoss
from curriculoss import superloss_confidence

from _helpers import ALL_DTYPES, Float64Spy, superloss_reference as reference_sl


# The equations' tests run Eq. 3 as written (step='paper'); the normalised step, the default, is
# tested against them below (test_normalised_step_*).
SuperLoss = functools.partial(curriculoss.SuperLoss, step="paper")


superloss = functools.partial(curriculoss.superloss, step="paper")


E = math.e


def brute_force(loss: float, tau: float, lam: float) -> tuple[float, float]:
    """argmin and min of Eq. 1 over sigma, found numerically in u = log(sigma).

    For loss < tau, Eq. 1 tends to -inf as sigma -> inf, so its minimum of interest is the local one,
    which lies at sigma <= e (u <= 1); the local maximum lies beyond. The search is on u <= 1, which
    also reproduces the cap: below beta = -2/e the function decreases on the whole interval and the
    minimiser is its end, sigma = e.
    """
    f = lambda u: (loss - tau) * math.exp(u) + lam * u * u
    res = minimize_scalar(f, bounds=(-60.0, 1.0), method="bounded", options={"xatol": 1e-12, "maxiter": 2000})
    u = res.x if f(res.x) < f(1.0) else 1.0
    return math.exp(u), f(u)


GRID = [
    (loss, tau, lam)
    for loss in (0.0, 0.05, 0.3, 1.0, 2.302585, 5.0, 20.0)
    for tau in (0.0, 0.5, 2.302585, 4.0)
    for lam in (0.25, 1.0, 3.0)
]


@pytest.mark.parametrize("loss,tau,lam", GRID)
def test_confidence_and_value_equal_brute_force_minimum(loss, tau, lam):
    sigma_ref, sl_ref = brute_force(loss, tau, lam)
    x = torch.tensor([loss], dtype=torch.float64)
    sigma = superloss_confidence(x, tau, lam).item()
    sl = superloss(x, tau, lam, reduction="sum").item()
    assert sigma == pytest.approx(sigma_ref, rel=1e-5, abs=1e-8)
    assert sl == pytest.approx(sl_ref, rel=1e-8, abs=1e-9)


def test_below_the_cap_confidence_is_e():
    beta = torch.tensor([-2 / E, -1.0, -5.0, -1e6], dtype=torch.float64)
    assert torch.allclose(superloss_confidence(beta, 0.0, 1.0), torch.full_like(beta, E), rtol=1e-12)
    # float32: the cap lands on the float nearest -1/e, just below the true value; still e, not NaN
    beta32 = torch.tensor([-2 / E, -3.0], dtype=torch.float32)
    sigma32 = superloss_confidence(beta32, 0.0, 1.0)
    assert torch.isfinite(sigma32).all()
    assert torch.allclose(sigma32, torch.full_like(sigma32, E), rtol=1e-5)
    # At and below the cap, float32 gives float32(e) exactly: the clamp's floor (1e-24, which keeps
    # torch's float32 expm1 off its slow path below 1e-15) still rounds 1 - v to exactly 1.
    beta32 = torch.tensor([-2 / E, -1.0, -5.0, -1e6, -1e30], dtype=torch.float32)
    assert torch.equal(superloss_confidence(beta32, 0.0, 1.0), torch.full_like(beta32, E))


def test_gradient_is_the_confidence(dtype, device):
    loss = (torch.rand(64, dtype=dtype, device=device) * 6).requires_grad_()
    superloss(loss, 2.0, 0.5, reduction="sum").backward()
    torch.testing.assert_close(loss.grad, superloss_confidence(loss, 2.0, 0.5))


def test_gradcheck_matches_finite_differences():
    # The envelope theorem makes dSL/dl = sigma* exact even though sigma* depends on l, so the
    # constant-sigma backward agrees with finite differences of the full forward.
    loss = torch.tensor([0.1, 0.7, 1.5, 3.0, 9.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda l: superloss(l, 1.2, 0.7, reduction="none"), (loss,))


def test_translation_invariance():
    loss = torch.rand(32, dtype=torch.float64) * 4
    for k in (-3.0, 0.5, 100.0):
        a = superloss(loss, 1.0, 1.0, reduction="none")
        b = superloss(loss + k, 1.0 + k, 1.0, reduction="none")
        torch.testing.assert_close(a, b)
    # with a running threshold the shift needs no help
    m1, m2 = SuperLoss(tau="avg"), SuperLoss(tau="avg")
    for _ in range(3):
        batch = torch.rand(16, dtype=torch.float64)
        m1(batch)
        m2(batch + 7.0)
        torch.testing.assert_close(m1.confidence, m2.confidence)


@pytest.mark.parametrize("k", [1e-3, 0.5, 10.0, 1e4])
def test_homogeneity(k):
    # L_{K lam}(K l, sigma) = K L_lam(l, sigma) (Sec. 2.2), so SL and sigma* follow; losses up to 1e4.
    loss = torch.rand(50, dtype=torch.float64)
    a = superloss(loss * k, 0.4 * k, 0.8 * k, reduction="none")
    b = k * superloss(loss, 0.4, 0.8, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * k)
    torch.testing.assert_close(superloss_confidence(loss * k, 0.4 * k, 0.8 * k), superloss_confidence(loss, 0.4, 0.8))


def test_large_lambda_limit_is_the_input_loss():
    loss = torch.rand(20, dtype=torch.float64) * 5
    sl = superloss(loss, 1.0, 1e9, reduction="none")
    torch.testing.assert_close(sl, loss - 1.0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(superloss_confidence(loss, 1.0, 1e9), torch.ones_like(loss), rtol=1e-8, atol=1e-8)


def test_reductions_and_shapes(dtype, device):
    loss = torch.rand(3, 4, 5, dtype=dtype, device=device)
    none = superloss(loss, 0.5, reduction="none")
    assert none.shape == loss.shape
    torch.testing.assert_close(superloss(loss, 0.5, reduction="sum"), none.sum())
    torch.testing.assert_close(superloss(loss, 0.5, reduction="mean"), none.mean())


def _reference_run(batches, mode, momentum=0.9, smoothing=None, lam=1.0):
    """Plain-Python recomputation of the module's threshold, smoothing and confidence."""
    total, count, tau = 0.0, 0, None
    smooth: dict[int, float] = {}
    taus, confidences = [], []
    for loss, index in batches:
        values = []
        for l, i in zip(loss.tolist(), index.tolist()):
            if smoothing is not None:
                smooth[i] = smoothing * smooth[i] + (1 - smoothing) * l if i in smooth else l
                l = smooth[i]
            values.append(l)
        mean = sum(values) / len(values)
        if mode == "avg":
            total += sum(values)
            count += len(values)
            tau = total / count
        else:
            tau = mean if tau is None else momentum * tau + (1 - momentum) * mean
        taus.append(tau)
        confidences.append([brute_force(v, tau, lam)[0] for v in values])
    return taus, confidences, smooth


def _batches(seed: int, n: int = 30) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Six batches of 10 float64 losses in [0, 3) with distinct dataset indices in [0, n)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(10, generator=gen, dtype=torch.float64) * 3, torch.randperm(n, generator=gen)[:10])
            for _ in range(6)]


@pytest.mark.parametrize("mode", ["avg", "ema"])
@pytest.mark.parametrize("smoothing", [None, 0.9])
def test_running_threshold_and_smoothing_match_plain_python(mode, smoothing):
    n = 30
    batches = _batches(1, n)
    taus, confidences, smooth = _reference_run(batches, mode, smoothing=smoothing)
    module = SuperLoss(tau=mode, num_samples=n if smoothing else None, smoothing=smoothing or 0.9)
    for (loss, index), tau, conf in zip(batches, taus, confidences):
        module(loss, index if smoothing else None)
        assert float(module.tau) == pytest.approx(tau, rel=1e-12)
        np.testing.assert_allclose(module.confidence.numpy(), conf, rtol=1e-5)
    if smoothing:
        for i, v in smooth.items():
            assert float(module.smoothed_loss[i]) == pytest.approx(v, rel=1e-12)
        assert int(module.seen.sum()) == len(smooth)


def test_fixed_threshold_is_constant():
    module = SuperLoss(tau=math.log(10), lam=0.25)
    for _ in range(2):
        loss = torch.rand(8, dtype=torch.float64) * 10
        module(loss)
        assert float(module.tau) == pytest.approx(math.log(10))
        expected = [brute_force(l, math.log(10), 0.25)[0] for l in loss.tolist()]
        np.testing.assert_allclose(module.confidence.numpy(), expected, rtol=1e-5)


def _train_steps(module, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(steps):
        index = torch.randint(0, 20, (8,), generator=gen).unique()
        loss = torch.rand(index.numel(), generator=gen, dtype=torch.float64) * 4
        outs.append(module(loss, index))
    return torch.stack(outs)


@pytest.mark.parametrize("mode", ["avg", "ema", 1.5])
def test_state_dict_round_trip_continues_bit_identically(mode, tmp_path):
    a = SuperLoss(tau=mode, num_samples=20)
    _train_steps(a, 5, seed=0)
    torch.save(a.state_dict(), tmp_path / "sl.pt")
    b = SuperLoss(tau=mode, num_samples=20)
    b.load_state_dict(torch.load(tmp_path / "sl.pt", weights_only=True))
    assert torch.equal(_train_steps(a, 5, seed=3), _train_steps(b, 5, seed=3))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_non_finite_losses_never_change_state():
    module = SuperLoss(tau="avg", num_samples=10)
    module(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 2]))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    out = module(torch.tensor([float("nan"), float("inf"), -float("inf")]), torch.tensor([0, 1, 3]))
    assert torch.isnan(out)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    # a mixed batch updates state from its finite entries only
    module(torch.tensor([float("nan"), 5.0]), torch.tensor([4, 5]))
    assert float(module.count) == 4 and float(module.tau) == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert not bool(module.seen[4]) and bool(module.seen[5])


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_infinite_losses_give_infinite_outputs(reduction):
    """SL -> +inf as the loss -> +inf (sigma* ~ 2 lam W / beta: SL ~ 2 lam W) and -> -inf as it -> -inf
    (the cap, sigma* = e); a NaN loss gives NaN. The module's output keeps that, whichever way its
    gradient is attached (native operations for finite batches, a Python node otherwise)."""
    loss = torch.tensor([0.5, math.inf, 2.0, -math.inf, math.nan], requires_grad=True)
    out = SuperLoss(tau=1.0, reduction=reduction)(loss)
    if reduction == "none":
        assert out[1].item() == math.inf and out[3].item() == -math.inf and math.isnan(out[4].item())
        finite = torch.tensor([0.5, 2.0])
        torch.testing.assert_close(out[[0, 2]], superloss(finite, 1.0, reduction="none"))
        out[[0, 2]].sum().backward()
        torch.testing.assert_close(loss.grad[[0, 2]], superloss_confidence(finite, 1.0))
    else:
        assert math.isnan(out.item())  # +inf and -inf entries together
        # one infinite entry alone: the sum is infinite
        assert SuperLoss(tau=1.0, reduction="sum")(loss[:2]).item() == math.inf


@pytest.mark.parametrize("masked", [False, True])
def test_double_backward_weighs_the_task_losss_curvature(masked):
    """sigma* is a constant (errata 2), so the gradient of a function of SuperLoss's gradient (e.g. a
    gradient penalty) equals that of CE * sigma*, sigma* held fixed: checked against autograd through
    torch's own cross-entropy."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randint(0, 4, (6,), generator=gen)
    mask = torch.tensor([False, True, False, False, True, False]) if masked else None
    module = SuperLoss(tau="avg", num_samples=10)
    index = torch.arange(6)
    module(torch.nn.functional.cross_entropy(z, y, reduction="none").detach(), index)  # state: tau, smoothed
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    out = module(ce, index, mask)
    (g,) = torch.autograd.grad(out, z, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), z)
    weight = module.confidence.detach() * (1.0 if mask is None else (~mask).double())
    count = 6 if mask is None else int((~mask).sum())
    ref = (torch.nn.functional.cross_entropy(z, y, reduction="none") * weight).sum() / count
    (g_ref,) = torch.autograd.grad(ref, z, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), z)
    torch.testing.assert_close(g, g_ref)
    torch.testing.assert_close(gg, gg_ref)


def test_functional_double_backward_holds_sigma_constant():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (5,), generator=gen)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    (g,) = torch.autograd.grad(superloss(ce, 1.0, 0.5, reduction="sum"), z, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), z)
    weight = superloss_confidence(ce.detach(), 1.0, 0.5)
    ref = (torch.nn.functional.cross_entropy(z, y, reduction="none") * weight).sum()
    (g_ref,) = torch.autograd.grad(ref, z, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), z)
    torch.testing.assert_close(gg, gg_ref)


def test_mask_ignores_entries():
    loss = torch.tensor([[0.5, 9.0, 1.0], [2.0, float("nan"), 0.1]], dtype=torch.float64, requires_grad=True)
    ignore = torch.tensor([[False, True, False], [False, True, False]])
    module = SuperLoss(tau="avg")
    out = module(loss, mask=ignore)
    kept = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    assert float(module.tau) == pytest.approx(kept.mean().item())
    assert out.item() == pytest.approx(superloss(kept, kept.mean(), reduction="mean").item())
    out.backward()
    assert torch.all(loss.grad[ignore] == 0)
    none = SuperLoss(tau="avg", reduction="none")(loss.detach(), mask=ignore)
    assert torch.all(none[ignore] == 0)


@pytest.mark.parametrize("step", ["normalised", "paper"])
def test_compiled_module_equals_eager(step):
    eager = curriculoss.SuperLoss(tau="ema", num_samples=16, step=step)
    compiled = curriculoss.SuperLoss(tau="ema", num_samples=16, step=step)
    fn = torch.compile(compiled, fullgraph=True, backend="aot_eager")
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        index = torch.randperm(16, generator=gen)[:8]
        loss = torch.rand(8, generator=gen)
        torch.testing.assert_close(fn(loss, index), eager(loss, index))
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value)


def test_meta_device_forward():
    module = SuperLoss(tau="avg", num_samples=100).to("meta")
    loss = torch.empty(8, device="meta", requires_grad=True)
    out = module(loss, torch.zeros(8, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == ()
    assert superloss(torch.empty(3, 4, device="meta"), 1.0, reduction="none").shape == (3, 4)


def test_follows_device_and_dtype(device):
    module = SuperLoss(tau="avg", num_samples=4).to(device)
    module(torch.rand(4, device=device), torch.arange(4, device=device))
    assert module.smoothed_loss.device.type == torch.device(device).type


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(tau="mean"), "tau"), (dict(tau=float("nan")), "tau"), (dict(lam=0.0), "lam"), (dict(lam=-1), "lam"),
        (dict(momentum=1.0), "momentum"), (dict(smoothing=-0.1), "smoothing"), (dict(num_samples=0), "num_samples"),
        (dict(reduction="avg"), "reduction"),
    ],
)
def test_constructor_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SuperLoss(**kwargs)


def test_forward_errors_leave_state_unchanged():
    module = SuperLoss(tau="avg", num_samples=5)
    module(torch.rand(3), torch.arange(3))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(TypeError, match="loss"):
        module(torch.ones(3, dtype=torch.long), torch.arange(3))
    with pytest.raises(ValueError, match="index"):
        module(torch.rand(3), torch.arange(4))
    with pytest.raises(TypeError, match="index"):
        module(torch.rand(3), torch.arange(3).float())
    with pytest.raises(ValueError, match="index is required"):
        module(torch.rand(3))
    with pytest.raises(ValueError, match="mask"):
        module(torch.rand(3), torch.arange(3), mask=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        module(torch.rand(3), torch.arange(3), mask=torch.zeros(3))
    with pytest.raises(IndexError):
        module(torch.rand(3), torch.tensor([0, 1, 7]))
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="lam"):
        superloss(torch.rand(3), 1.0, lam=0)
    with pytest.raises(ValueError, match="reduction"):
        superloss(torch.rand(3), 1.0, reduction="avg")


@pytest.mark.parametrize("smoothing", [False, True])
def test_float32_confidence_within_the_lambertw_contract_against_mpmath(smoothing):
    """float32 losses, computed in float32 (no smoothing) or from the float64 smoothed losses: sigma* =
    exp(-W) with W within lambertw's float32 contract (2e-6 relative + 1e-6 absolute) of mpmath's."""
    import mpmath

    mpmath.mp.dps = 30
    gen = torch.Generator().manual_seed(4)
    loss = torch.cat([torch.rand(150, generator=gen) * 3, torch.rand(50, generator=gen) * 300,
                      torch.tensor([0.0, 1e-30, 1e4])])
    module = SuperLoss(tau=1.7, lam=0.6, num_samples=loss.numel() if smoothing else None)
    module(loss, torch.arange(loss.numel()) if smoothing else None)
    source = module.smoothed_loss if smoothing else loss.double()
    x = [max(-1 / E, (v - 1.7) / 0.6 / 2) for v in source.tolist()]
    w_ref = np.array([float(mpmath.lambertw(mpmath.mpf(v)).real) for v in x])
    w = -np.log(module.confidence.double().numpy())
    # the confidence is rounded to float32 (relative 6e-8), which adds 6e-8 absolute to -log sigma
    assert np.all(np.abs(w - w_ref) <= 1e-6 + 2e-6 * np.abs(w_ref) + 1e-7)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_matches_brute_force_on_its_rounded_losses(dtype):
    # The reproductions: float16 gave NaN, bfloat16 a capped confidence of 2.56 instead of e.
    loss = torch.tensor([0.0, 0.1, 1.0, 2.5, 3.0, 7.0], dtype=torch.float64).to(dtype)
    tau, lam = 2.0, 1.0
    ref = [brute_force(v, tau, lam) for v in loss.double().tolist()]
    eps = torch.finfo(dtype).eps
    sigma = superloss_confidence(loss, tau, lam)
    assert sigma.dtype == dtype
    np.testing.assert_allclose(sigma.double().numpy(), [r[0] for r in ref], rtol=max(2 * eps, 1e-5))
    assert sigma[0].double().item() == pytest.approx(E, rel=eps)  # beta = -2 < -2/e: the cap, sigma* = e
    x = loss.clone().requires_grad_()
    sl = superloss(x, tau, lam, reduction="none")
    assert sl.dtype == dtype
    np.testing.assert_allclose(sl.detach().double().numpy(), [r[1] for r in ref], rtol=max(2 * eps, 1e-5), atol=2 * eps)
    sl.sum().backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad, sigma)
    # the module: output and confidence in the loss's dtype, state float64, same numbers as float64
    # fed with the rounded losses
    m, m64 = SuperLoss(tau="avg", num_samples=6), SuperLoss(tau="avg", num_samples=6)
    out = m(loss, torch.arange(6))
    out64 = m64(loss.double(), torch.arange(6))
    assert out.dtype == dtype and m.confidence.dtype == dtype and torch.isfinite(out)
    assert m.tau.dtype == torch.float64 and m.smoothed_loss.dtype == torch.float64
    assert out.double().item() == pytest.approx(out64.item(), rel=4 * eps, abs=4 * eps)
    # float32 carries lambertw's float32 contract (W within 2e-6 relative + 1e-6 absolute, so sigma* within
    # about 1e-6 relative of the float64 value), not a rounding-level agreement; the half types round more.
    torch.testing.assert_close(m.confidence.double(), m64.confidence, rtol=1e-6 if dtype == torch.float32 else 2 * eps,
                               atol=0.0)
    assert float(m.tau) == pytest.approx(float(m64.tau), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_reproductions(dtype):
    sigma = superloss_confidence(torch.tensor([0.0, 1.0], dtype=dtype), tau=2.0)
    assert torch.isfinite(sigma).all()
    assert sigma[0].double().item() == pytest.approx(E, rel=torch.finfo(dtype).eps)
    assert torch.isfinite(SuperLoss()(torch.tensor([0.1, 2.5, 3.0], dtype=dtype)))


def test_negative_index_is_an_error_and_leaves_state_unchanged():
    m = SuperLoss(num_samples=10)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(IndexError, match=r"index must hold dataset indices in \[0, 9\].*\[-1, 0\]"):
        m(torch.tensor([1.0, 2.0]), torch.tensor([0, -1]))
    with pytest.raises(IndexError, match="index"):
        m(torch.tensor([1.0, 2.0]), torch.tensor([0, -10], dtype=torch.int32))
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not bool(m.seen[9])


def test_float64_losses_near_the_overflow_leave_the_threshold_finite():
    # 1e308 + 1e308 overflowed the float64 running sum: tau became inf and then NaN for good.
    for mode in ("avg", "ema"):
        m = SuperLoss(tau=mode, num_samples=4)
        m(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([0, 1]))
        out = m(torch.tensor([1e308, 1e308, 1.7e308], dtype=torch.float64), torch.tensor([2, 3, 0]))
        assert torch.isfinite(out)
        assert float(m.tau) == pytest.approx(2.0) and float(m.loss_sum) in (0.0, 4.0)
        assert torch.isfinite(m.smoothed_loss).all() and not bool(m.seen[2])
        out = m(torch.tensor([2.0, 2.0], dtype=torch.float64), torch.tensor([0, 1]))
        assert torch.isfinite(out) and math.isfinite(float(m.tau))


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), "avg", None, True])
def test_functional_superloss_validates_tau(tau):
    for fn in (superloss, superloss_confidence):
        with pytest.raises((ValueError, TypeError), match="tau"):
            fn(torch.rand(3), tau)
    with pytest.raises(TypeError, match="tau"):
        superloss(torch.rand(3), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("mode", ["avg", "ema"])
@pytest.mark.parametrize("smoothing", [None, 0.9])
def test_float32_state_matches_plain_python_and_makes_no_float64(mode, smoothing):
    """After ``.float()`` the module makes no float64 tensor at all (forward and backward), and its
    threshold, smoothing and confidence follow the plain-Python reference to float32 precision."""
    n = 30
    batches = _batches(2, n)
    taus, confidences, smooth = _reference_run(batches, mode, smoothing=smoothing)
    module = SuperLoss(tau=mode, num_samples=n if smoothing else None, smoothing=smoothing or 0.9).float()
    assert all(b.dtype in (torch.float32, torch.bool) for b in module.buffers())
    for (loss, index), tau, conf in zip(batches, taus, confidences):
        loss32 = loss.float().requires_grad_()
        with Float64Spy() as spy:
            module(loss32, index if smoothing else None).backward()
        assert spy.seen == []
        assert float(module.tau) == pytest.approx(tau, rel=1e-6)
        np.testing.assert_allclose(module.confidence.numpy(), conf, rtol=2e-5)
        np.testing.assert_allclose(loss32.grad.numpy(), np.array(conf) / len(conf), rtol=2e-5)
    if smoothing:
        for i, v in smooth.items():
            assert float(module.smoothed_loss[i]) == pytest.approx(v, rel=1e-6)


def test_half_precision_state_is_refused_before_any_change():
    module = SuperLoss(num_samples=4).half()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(TypeError, match=r"state must be float64 \(default\) or float32.*call \.float\(\)"):
        module(torch.rand(4), torch.arange(4))
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


def test_confidence_under_torch_func_vmap():
    """vmap over the confidence (the torch code in new buffers: vmap has no out= variants) gives Eq. 4
    with scipy's W: sigma* = exp(-W(max(beta, -2/e) / 2)), beta = (loss - tau) / lam."""
    import scipy.special

    loss = torch.rand(4, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6
    beta = (loss.numpy() - 1.5) / 0.5
    capped = beta <= -2 / E  # the cap: W = -1, sigma* = e (scipy gives NaN at float(-1/e), just below -1/e)
    ref = torch.from_numpy(np.where(capped, E, np.exp(-scipy.special.lambertw(np.where(capped, 0.0, beta) / 2).real)))
    torch.testing.assert_close(torch.func.vmap(lambda l: superloss_confidence(l, 1.5, 0.5))(loss), ref,
                               rtol=1e-11, atol=1e-12)


def scipy_sigma(loss: np.ndarray, tau: float, lam: float) -> np.ndarray:
    """Eq. 4 with scipy's Lambert W, the cap written out (an independent implementation)."""
    from scipy.special import lambertw as scipy_w

    beta = (loss - tau) / lam
    capped = beta <= -2 / E
    return np.where(capped, E, np.exp(-np.real(scipy_w(np.where(capped, 0.0, beta) / 2))))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("form,masked", [("functional", False), ("module", False), ("module", True)])
def test_normalised_step_weighs_by_sigma_over_its_sum(reduction, masked, form):
    gen = torch.Generator().manual_seed(3)
    loss = (torch.rand(32, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    mask = torch.rand(32, generator=gen) < 0.3 if masked else None
    if form == "functional":
        out = curriculoss.superloss(loss, 2.0, 1.0, reduction)
        paper = superloss(loss.detach(), 2.0, 1.0, reduction)
    else:
        out = curriculoss.SuperLoss(tau=2.0, reduction=reduction)(loss, mask=mask)
        paper = SuperLoss(tau=2.0, reduction=reduction)(loss.detach(), mask=mask)
    out.sum().backward()
    sigma = scipy_sigma(loss.detach().numpy(), 2.0, 1.0)
    keep = np.ones(32, bool) if mask is None else ~mask.numpy()
    assert 0 < (sigma[keep] == E).sum() < keep.sum()  # some at the cap, some not
    scale = keep.sum() / sigma[keep].sum()
    expected = np.where(keep, sigma, 0.0) * scale / (keep.sum() if reduction == "mean" else 1)
    np.testing.assert_allclose(loss.grad.numpy(), expected, rtol=1e-7)
    np.testing.assert_allclose(out.detach().numpy(), paper.numpy() * scale, rtol=1e-7)


def test_normalised_step_of_an_all_ignored_batch_is_zero():
    loss = torch.rand(8, requires_grad=True)
    out = curriculoss.SuperLoss(reduction="sum")(loss, mask=torch.ones(8, dtype=torch.bool))
    out.backward()
    assert out.item() == 0 and torch.all(loss.grad == 0)


def test_step_is_validated():
    with pytest.raises(ValueError, match="step must be one of"):
        curriculoss.SuperLoss(step="normalized")
    with pytest.raises(ValueError, match="step must be one of"):
        curriculoss.superloss(torch.rand(3), 1.0, step="mean")


@pytest.mark.parametrize("tau", ["avg", "ema", 1.5])
@pytest.mark.parametrize("smoothing", [False, True])
def test_eval_mode_changes_no_state(tau, smoothing):
    module = curriculoss.SuperLoss(tau=tau, num_samples=64 if smoothing else None)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        index = torch.randperm(64, generator=gen)[:16]
        module(torch.rand(16, generator=gen, dtype=torch.float64) * 3, index if smoothing else None)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    tau_now = float(module.tau)
    module.eval()
    for _ in range(10):
        index = torch.randperm(64, generator=gen)[:16]
        loss = (torch.rand(16, generator=gen, dtype=torch.float64) * 30).requires_grad_()
        out = module(loss, index if smoothing else None)
        out.backward()
        # computed with the current threshold; the confidence from the stored smoothed loss blended in
        source = loss.detach().numpy()
        if smoothing:
            seen = before["seen"][index].numpy()
            stored = before["smoothed_loss"][index].numpy()
            source = np.where(seen, 0.9 * stored + 0.1 * source, source)
        sigma = scipy_sigma(source, tau_now, 1.0)
        np.testing.assert_allclose(module.confidence.numpy(), sigma, rtol=1e-7)
        np.testing.assert_allclose(loss.grad.numpy(), sigma / sigma.sum(), rtol=1e-7)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    module(torch.rand(16, dtype=torch.float64))  # no index needed in eval, even with smoothing
    module.train()
    with torch.no_grad():  # train mode updates, also without gradients (as BatchNorm's statistics)
        module(torch.rand(16, dtype=torch.float64) + 50, torch.arange(16) if smoothing else None)
    assert tau == 1.5 or float(module.tau) != tau_now


def test_misuse_gets_a_sentence_that_names_the_fix():
    logits, target = torch.randn(8, 10), torch.randint(10, (8,))
    with pytest.raises(ValueError, match="per-sample losses, not logits"):
        curriculoss.SuperLoss()(logits, target)
    with pytest.raises(ValueError, match="on the loss's device"):
        curriculoss.SuperLoss(num_samples=10)(torch.rand(8), torch.zeros(8, dtype=torch.long, device="meta"))
    module, reference = curriculoss.SuperLoss(num_samples=10), curriculoss.SuperLoss(num_samples=10)
    loss = torch.rand(8, dtype=torch.float64)
    out = module(loss, np.arange(8, dtype=np.int32))  # a NumPy index is converted
    assert torch.equal(out, reference(loss, torch.arange(8)))


def test_at_cap_marks_beta_at_or_below_minus_two_over_e():
    lam, tau = 0.5, 1.0
    loss = torch.tensor([0.0, 0.5, 1.0 - 2 * lam / math.e - 1e-9, 1.0 - 2 * lam / math.e + 1e-6, 1.0, 3.0],
                        dtype=torch.float64)
    module = curriculoss.SuperLoss(tau=tau, lam=lam)
    module(loss)
    beta = (loss.numpy() - tau) / lam  # independent: the definition of the cap in Eq. 4 (errata 1)
    np.testing.assert_array_equal(module.at_cap.numpy(), beta <= -2 / math.e)
    torch.testing.assert_close(module.confidence[module.at_cap], torch.full((3,), math.e, dtype=torch.float64))


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


def test_triplet_loss_with_plain_superloss():
    a, p, n = (torch.randn(10, 6, dtype=torch.float64) for _ in range(3))
    a.requires_grad_()
    l = F.triplet_margin_loss(a, p, n, margin=1.0, reduction="none")
    out = SuperLoss(tau="avg", reduction="sum")(l)
    assert out.item() == pytest.approx(reference_sl(l.detach().numpy(), l.mean().item(), 1.0)[0].sum(), rel=1e-10)
    out.backward()
