"""lambertw against independent references: mpmath at 50 digits, scipy, finite differences."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

from curriculoss import lambertw

mpmath.mp.dps = 50
INV_E = float(1 / mpmath.e)


def _reference(xs: list[float]) -> np.ndarray:
    return np.array([float(mpmath.lambertw(mpmath.mpf(v)).real) for v in xs])


def _grid(dtype: torch.dtype) -> list[float]:
    """Points over the whole domain: the branch point, negatives, tiny and subnormal, huge."""
    rng = np.random.default_rng(0)
    if dtype == torch.float64:
        near = -INV_E + INV_E * np.logspace(-17, 0, 600)
        pos = np.logspace(-320, 300, 700)
        neg = -np.logspace(-320, math.log10(INV_E), 400)
    elif dtype in (torch.float16, torch.bfloat16):
        near = -INV_E + INV_E * np.logspace(-4, 0, 300)
        top = math.log10(torch.finfo(dtype).max)
        pos = np.logspace(-7, top, 300)
        neg = -np.logspace(-7, math.log10(INV_E), 200)
    else:
        near = -INV_E + INV_E * np.logspace(-8, 0, 600)
        pos = np.logspace(-45, math.log10(3e38), 700)
        neg = -np.logspace(-45, math.log10(INV_E), 400)
    mid = rng.uniform(-INV_E, 10.0, 600)
    xs = np.concatenate([near, pos, neg, mid, [0.0, -INV_E]])
    xs = torch.tensor(xs, dtype=torch.float64).to(dtype)  # rounded to the dtype under test
    xs = xs[torch.isfinite(xs) & (xs.double() >= -INV_E)]
    return xs.double().tolist()


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 2e-6, 1e-6),
                                               (torch.float16, 2 ** -10, 1e-6), (torch.bfloat16, 2 ** -7, 1e-6)])
def test_matches_mpmath_over_the_domain(dtype, rtol, atol, device):
    xs = _grid(dtype)
    ours = lambertw(torch.tensor(xs, dtype=dtype, device=device)).double().cpu().numpy()
    ref = _reference(xs)
    err = np.abs(ours - ref)
    bound = atol + rtol * np.abs(ref)
    worst = int(np.argmax(err / bound))
    assert np.all(err <= bound), f"x={xs[worst]!r}: got {ours[worst]!r}, want {ref[worst]!r}"


def test_float32_subnormals_are_exact():
    x = torch.tensor([1e-45, -1e-45, 1e-40, -3e-39, 1.1754944e-38], dtype=torch.float32)
    assert torch.equal(lambertw(x), x)


def test_agrees_with_scipy_on_random_inputs():
    x = np.random.default_rng(1).uniform(-INV_E, 1e4, 20_000)
    np.testing.assert_allclose(lambertw(torch.from_numpy(x)).numpy(), scipy.special.lambertw(x).real, rtol=1e-13, atol=1e-14)


def test_special_values():
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([0.0, math.e, math.inf, math.nan, -0.5, -INV_E - 1e-6], dtype=dtype)
        w = lambertw(x)
        assert w[0] == 0 and w[2] == math.inf
        torch.testing.assert_close(w[1], torch.tensor(1.0, dtype=dtype))
        assert torch.isnan(w[3]) and torch.isnan(w[4]) and torch.isnan(w[5])
    # -1/e rounded to float32 lies just below -1/e: rounding, not a domain error.
    assert float(np.float32(-INV_E)) < -INV_E
    assert lambertw(torch.tensor(-INV_E, dtype=torch.float32)) == -1
    assert lambertw(torch.tensor(-INV_E, dtype=torch.float64)) == -1
    # One step further below is outside the domain.
    below = torch.nextafter(torch.tensor(-INV_E, dtype=torch.float32), torch.tensor(-1.0)) - 1e-7
    assert torch.isnan(lambertw(below))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_minus_one_over_e_rounded_to_any_dtype_gives_minus_one(dtype):
    # float16(-1/e) lies 4e-5 below -1/e (outside float32's tolerance): it was NaN.
    x = torch.tensor(-1 / math.e, dtype=torch.float64).to(dtype)
    w = lambertw(x)
    assert w.dtype == dtype
    if x.double() < -INV_E:  # rounded below: still "-1/e", so the branch point
        assert w.item() == -1.0
    else:  # bfloat16 rounds above -1/e: W there, to the dtype's precision
        assert w.double().item() == pytest.approx(_reference([x.double().item()])[0], rel=2 ** -7)
    # and further below than two units in the last place is outside the domain
    ulp = torch.finfo(dtype).eps / 4  # 1/e is in [1/4, 1/2)
    assert torch.isnan(lambertw(torch.tensor(-INV_E - 3 * ulp, dtype=torch.float64).to(dtype)))


def test_half_precision_is_computed_in_float32():
    x = torch.linspace(-0.36, 50, 101)
    for dtype in (torch.float16, torch.bfloat16):
        w = lambertw(x.to(dtype))
        assert w.dtype == dtype
        torch.testing.assert_close(w.float(), lambertw(x.to(dtype).float()).to(dtype).float())


def test_gradient_matches_finite_differences_and_closed_form():
    x = torch.tensor([-0.3, -0.1, 0.0, 0.5, 3.0, 1e3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambertw, (x,))
    assert torch.autograd.gradgradcheck(lambertw, (x,))
    (g,) = torch.autograd.grad(lambertw(x).sum(), x)
    w = _reference(x.detach().tolist())
    xs = x.detach().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        closed = np.where(xs == 0, 1.0, w / (xs * (1 + w)))
    np.testing.assert_allclose(g.numpy(), closed, rtol=1e-12)
    assert g[2] == 1.0


def test_gradient_at_branch_point_is_infinite():
    x = torch.tensor(-INV_E, dtype=torch.float64, requires_grad=True)
    lambertw(x).backward()
    assert x.grad == math.inf


def test_satisfies_defining_equation_in_float32_on_large_batch():
    x = torch.empty(100_000).uniform_(-0.36, 1e6)
    w = lambertw(x).double()
    torch.testing.assert_close(w * torch.exp(w), x.double(), rtol=1e-5, atol=1e-6)


def test_meta_device_and_shapes():
    x = torch.empty(3, 4, 5, device="meta")
    w = lambertw(x)
    assert w.device.type == "meta" and w.shape == (3, 4, 5)


def test_torch_compile_fullgraph():
    compiled = torch.compile(lambertw, fullgraph=True, backend="aot_eager")
    x = torch.tensor([-0.3, 0.0, 2.0, 1e10], dtype=torch.float64, requires_grad=True)
    w = compiled(x)
    torch.testing.assert_close(w, lambertw(x.detach()))
    w.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [torch.tensor([1, 2]), [0.5], torch.tensor([1 + 1j])])
def test_bad_input_types(bad):
    with pytest.raises(TypeError, match="x must be"):
        lambertw(bad)


def test_small_tensors_keep_shape_dtype_and_gradient():
    """A batch-sized call (0-d, float64, a tensor that requires grad, float16 included): the result keeps
    the input's shape, dtype and gradient."""
    x = torch.tensor([0.5, 2.0, -0.2], requires_grad=True)
    w = lambertw(x)
    w.sum().backward()
    ref = _reference([0.5, 2.0, -0.2])
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), ref / (np.array([0.5, 2.0, -0.2]) * (1 + ref)), rtol=1e-5)
    assert lambertw(torch.tensor(1.0, dtype=torch.float64)).shape == ()
    assert float(lambertw(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.5671432904097838, rel=1e-14)
    assert lambertw(torch.ones(2, 3, dtype=torch.float16)).dtype == torch.float16


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 2e-6, 1e-6)])
def test_large_cpu_tensors_in_pieces_match_mpmath(dtype, rtol, atol, monkeypatch):
    """Large CPU tensors are evaluated in cache-sized pieces on all of torch's threads. Pieces of 37
    values per thread here (a remainder included), over the mpmath grid, a non-contiguous 2-D input,
    and special values on both sides of the first piece's edge (74 with two threads)."""
    from curriculoss import _lambertw as module

    monkeypatch.setattr(module, "_CPU_PIECE", 37)
    forward, calls = module.lambertw_forward, []

    def counted(*args, **kwargs):
        calls.append(args[0].numel())
        return forward(*args, **kwargs)

    monkeypatch.setattr(module, "lambertw_forward", counted)
    special = [math.nan, math.inf, -1.0, 0.0, 1e-40]
    xs = _grid(dtype)
    xs = xs[:35] + special + xs[35:67] + special + xs[67:]  # flat indices 35-39 and 72-76
    xs = xs[:len(xs) // 4 * 4]
    x = torch.tensor(xs, dtype=dtype).reshape(-1, 4).t().contiguous().t()  # non-contiguous, same order
    flat = x.reshape(-1)
    assert not x.is_contiguous() and flat[36] == flat[73] == math.inf and flat[37] == flat[74] == -1.0
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = lambertw(x)
    finally:
        torch.set_num_threads(threads)
    assert w.shape == x.shape and w.dtype == dtype
    ref = _reference(x.reshape(-1).tolist()).reshape(x.shape)
    ref[(x.isnan() | (x < -1.0 / math.e)).numpy()] = math.nan  # mpmath's W(-1) is complex
    ref[(x == math.inf).numpy()] = math.inf
    np.testing.assert_allclose(w.numpy(), ref, rtol=rtol, atol=atol, equal_nan=True)
    tiny = x == torch.tensor(1e-40, dtype=dtype)  # returned exactly (float32: a subnormal)
    assert int(tiny.sum()) == 2 and w[tiny].tolist() == x[tiny].tolist()
    # pieces of 37 values per thread, the last one shorter
    assert calls == [74] * (len(xs) // 74) + ([len(xs) % 74] if len(xs) % 74 else [])


def test_float32_floor_keeps_expm1_off_its_slow_path():
    """At the clamp's floor (the branch point, SuperLoss's cap) v = W + 1 stays above 1e-14: torch's
    float32 expm1 on the CPU is about 8 times slower below about 1e-15 (docs/benchmarks.md),
    and W = v - 1 still rounds to exactly -1."""
    from curriculoss import _lambertw as lw

    low, _ = lw.half_delta_bounds(torch.float32)
    for scaled in (False, True):
        floor = low * (lw.start_scale(torch.float32) if scaled else 1.0)
        v = lw.w_plus_one(torch.full((4,), floor, dtype=torch.float32), torch.float32, scaled=scaled)
        assert (v > 1e-14).all() and (v < 1e-9).all(), v
        assert torch.equal(v - 1.0, torch.full_like(v, -1.0))


def test_torch_func_vmap_and_jacrev():
    """Under torch.func's transforms (whose batching rules have no out= variants) the eager code works
    in new buffers: vmap gives scipy's W within the contracts, and jacrev the derivative
    exp(-W) / (1 + W) at scipy's W."""
    x = torch.rand(4, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5 - 0.3
    ref = torch.from_numpy(scipy.special.lambertw(x.numpy()).real)
    torch.testing.assert_close(torch.func.vmap(lambertw)(x), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.func.vmap(lambertw)(x.float()), ref.float(), rtol=2e-6, atol=1e-6)
    w = ref[0, :6]
    torch.testing.assert_close(torch.func.jacrev(lambertw)(x[0, :6]), torch.diag(torch.exp(-w) / (1 + w)))
