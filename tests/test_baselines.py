"""The robust-loss baselines (MAE, GCE, SCE, focal) against numpy formulas written from their papers,
analytic gradients, finite differences (gradcheck), and their argument checks."""
import inspect
import math

import numpy as np
import pytest
import torch

from curriculoss import FocalLoss, GCELoss, MAELoss, SCELoss, focal_loss, gce_loss, mae_loss, sce_loss

from _helpers import ALL_DTYPES, assert_input_errors, random_case

REDUCTIONS = ["none", "mean", "sum"]


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(np_log_softmax(z))


def np_reduce(v: np.ndarray, reduction: str):
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


# numpy references, straight from the papers -----------------------------------------------------------------


def ref_mae(z, y):
    """IMAE paper Eq. 11: ||e_y - p||_1."""
    p = np_softmax(z)
    onehot = np.eye(z.shape[1])[y]
    return np.abs(onehot - p).sum(axis=1)


def ref_gce(z, y, q):
    """Zhang & Sabuncu 2018: L_q = (1 - p_y^q) / q."""
    py = np_softmax(z)[np.arange(len(y)), y]
    return (1.0 - py ** q) / q


def ref_sce(z, y, alpha, beta, A):
    """Wang et al. 2019: alpha * CE + beta * RCE, RCE = -sum_k p_k log q_k with log 0 := A."""
    p = np_softmax(z)
    onehot = np.eye(z.shape[1])[y]
    ce = -np_log_softmax(z)[np.arange(len(y)), y]
    log_q = np.where(onehot == 1, 0.0, A)
    rce = -(p * log_q).sum(axis=1)
    return alpha * ce + beta * rce


def ref_focal(z, y, gamma, alpha):
    """Lin et al. 2017 Eq. 5: -alpha_t (1 - p_t)^gamma log p_t."""
    log_pt = np_log_softmax(z)[np.arange(len(y)), y]
    pt = np.exp(log_pt)
    if alpha is None:
        a = 1.0
    elif isinstance(alpha, torch.Tensor):
        a = alpha.double().numpy()[y]
    else:
        a = alpha
    return -a * (1.0 - pt) ** gamma * log_pt


# (functional, module, kwargs, numpy reference) -------------------------------------------------------------

ALPHA6 = torch.tensor([0.75, 0.25, 0.25, 0.5, 1.0, 2.0], dtype=torch.float64)

CASES = [
    ("mae", mae_loss, MAELoss, {}, lambda z, y: ref_mae(z, y)),
    ("gce-default", gce_loss, GCELoss, {}, lambda z, y: ref_gce(z, y, 0.7)),
    ("gce-q0.3", gce_loss, GCELoss, {"q": 0.3}, lambda z, y: ref_gce(z, y, 0.3)),
    ("gce-q1", gce_loss, GCELoss, {"q": 1.0}, lambda z, y: ref_gce(z, y, 1.0)),
    ("sce-default", sce_loss, SCELoss, {}, lambda z, y: ref_sce(z, y, 0.1, 1.0, -4.0)),
    ("sce-c100", sce_loss, SCELoss, {"alpha": 6.0, "beta": 0.1, "A": -6.0},
     lambda z, y: ref_sce(z, y, 6.0, 0.1, -6.0)),
    ("sce-code", sce_loss, SCELoss, {"A": math.log(1e-4)}, lambda z, y: ref_sce(z, y, 0.1, 1.0, math.log(1e-4))),
    ("focal-default", focal_loss, FocalLoss, {}, lambda z, y: ref_focal(z, y, 2.0, None)),
    ("focal-g0", focal_loss, FocalLoss, {"gamma": 0.0}, lambda z, y: ref_focal(z, y, 0.0, None)),
    ("focal-g0.5-scalar", focal_loss, FocalLoss, {"gamma": 0.5, "alpha": 0.25},
     lambda z, y: ref_focal(z, y, 0.5, 0.25)),
    ("focal-g5-perclass", focal_loss, FocalLoss, {"gamma": 5.0, "alpha": ALPHA6},
     lambda z, y: ref_focal(z, y, 5.0, ALPHA6)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,fn,module,kw,ref", CASES, ids=IDS)
def test_value_against_numpy(name, fn, module, kw, ref, reduction):
    z, y = random_case(seed=1)
    want = np_reduce(ref(z.numpy(), y.numpy()), reduction)
    got = fn(z, y, **kw, reduction=reduction)
    assert got.dtype == torch.float64
    assert got.shape == ((20,) if reduction == "none" else ())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
    # module and functional agree
    got_m = module(**kw, reduction=reduction)(z, y)
    np.testing.assert_allclose(got_m.numpy(), got.numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("name,fn,module,kw,ref", CASES, ids=IDS)
def test_gradcheck(name, fn, module, kw, ref):
    z, y = random_case(B=3, C=6, scale=1.5, seed=2)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fn(x, y, **kw, reduction="sum"), (z,))
    assert torch.autograd.gradcheck(lambda x: module(**kw, reduction="mean")(x, y), (z,), fast_mode=True)
    # second order too (all four are plain autograd compositions), on a smaller input
    z2 = z[:2, :4].detach().clone().requires_grad_()
    y2 = y[:2].clamp(max=3)
    kw2 = {**kw, "alpha": kw["alpha"][:4]} if isinstance(kw.get("alpha"), torch.Tensor) else kw
    assert torch.autograd.gradgradcheck(lambda x: fn(x, y2, **kw2, reduction="sum"), (z2,))


def _grad(fn, z, y, **kw):
    z = z.detach().clone().requires_grad_()
    fn(z, y, reduction="sum", **kw).backward()
    return z.grad.numpy()


def test_analytic_gradients():
    """Closed-form gradients w.r.t. the logits, with p - e_y the CE gradient (IMAE paper Eq. 15)."""
    z, y = random_case(seed=3)
    p = np_softmax(z.numpy())
    onehot = np.eye(z.shape[1])[y.numpy()]
    py = p[np.arange(len(y)), y.numpy()][:, None]
    # MAE: 2 p_y (p - e_y) (IMAE paper, Eq. 18)
    np.testing.assert_allclose(_grad(mae_loss, z, y), 2 * py * (p - onehot), rtol=1e-12, atol=1e-15)
    # GCE: p_y^q (p - e_y) (Zhang & Sabuncu, Eq. 8 through the softmax)
    np.testing.assert_allclose(_grad(gce_loss, z, y, q=0.7), py ** 0.7 * (p - onehot), rtol=1e-12, atol=1e-15)
    # SCE: (alpha - beta A p_y) (p - e_y)
    np.testing.assert_allclose(_grad(sce_loss, z, y, alpha=0.1, beta=1.0, A=-4.0), (0.1 + 4 * py) * (p - onehot),
                               rtol=1e-12, atol=1e-15)
    # focal, gamma = 0: CE
    np.testing.assert_allclose(_grad(focal_loss, z, y, gamma=0.0), p - onehot, rtol=1e-12, atol=1e-15)


def test_special_cases():
    z, y = random_case(seed=4)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    # GCE at q = 1 is MAE / 2
    torch.testing.assert_close(gce_loss(z, y, q=1.0, reduction="none"), mae_loss(z, y, reduction="none") / 2)
    # GCE tends to CE as q -> 0
    torch.testing.assert_close(gce_loss(z, y, q=1e-7, reduction="none"), ce, rtol=1e-5, atol=1e-6)
    # SCE: beta = 0 is alpha * CE; alpha = 0 is -A * MAE / 2
    torch.testing.assert_close(sce_loss(z, y, alpha=0.3, beta=0.0, reduction="none"), 0.3 * ce)
    torch.testing.assert_close(sce_loss(z, y, alpha=0.0, beta=1.0, A=-4.0, reduction="none"),
                               2.0 * mae_loss(z, y, reduction="none"))
    # focal: gamma = 0 and no alpha is CE; per-class alpha multiplies row-wise
    torch.testing.assert_close(focal_loss(z, y, gamma=0.0, reduction="none"), ce)
    fl = focal_loss(z, y, gamma=2.0, reduction="none")
    torch.testing.assert_close(focal_loss(z, y, gamma=2.0, alpha=ALPHA6, reduction="none"), fl * ALPHA6[y])
    torch.testing.assert_close(focal_loss(z, y, gamma=2.0, alpha=0.25, reduction="none"), fl * 0.25)
    # alpha tensor of ones == no alpha
    torch.testing.assert_close(focal_loss(z, y, alpha=torch.ones(6, dtype=torch.float64)), focal_loss(z, y))
    # a float32 per-class alpha with float64 logits is fine
    torch.testing.assert_close(focal_loss(z, y, alpha=ALPHA6.float()), focal_loss(z, y, alpha=ALPHA6))


def test_defaults():
    sig = lambda f: {k: v.default for k, v in inspect.signature(f).parameters.items()
                     if v.default is not inspect.Parameter.empty}
    assert sig(mae_loss) == {"reduction": "mean"}
    assert sig(gce_loss) == {"q": 0.7, "reduction": "mean"}
    assert sig(sce_loss) == {"alpha": 0.1, "beta": 1.0, "A": -4.0, "reduction": "mean"}
    assert sig(focal_loss) == {"gamma": 2.0, "alpha": None, "reduction": "mean"}
    # the modules use the same defaults
    for fn, mod in ((mae_loss, MAELoss), (gce_loss, GCELoss), (sce_loss, SCELoss), (focal_loss, FocalLoss)):
        assert sig(mod.__init__) == sig(fn), fn.__name__
    g, s, f = GCELoss(), SCELoss(), FocalLoss()
    assert g.q == 0.7 and (s.alpha, s.beta, s.A) == (0.1, 1.0, -4.0) and f.gamma == 2.0 and f.alpha is None
    assert MAELoss().reduction == "mean"
    # defaults give the papers' formulas
    z, y = random_case(seed=5)
    np.testing.assert_allclose(gce_loss(z, y).numpy(), ref_gce(z.numpy(), y.numpy(), 0.7).mean(), rtol=1e-12)
    np.testing.assert_allclose(sce_loss(z, y).numpy(), ref_sce(z.numpy(), y.numpy(), 0.1, 1.0, -4.0).mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(focal_loss(z, y).numpy(), ref_focal(z.numpy(), y.numpy(), 2.0, None).mean(),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("name,fn,module,kw,ref", CASES, ids=IDS)
def test_extreme_logits_finite(name, fn, module, kw, ref, dtype):
    """p_y = 1 and p_y = 0 in floating point: finite values and gradients; accurate values."""
    # float16 tops out at 65504, below SCE's 6 * 2e4: there p_y = e^-2000 is 0 just as well
    b = 1e3 if dtype == torch.float16 else 1e4
    z = torch.tensor([[b, -b, 0, 0, 0, 3.0], [b, -b, 0, 0, 0, 3.0], [50.0, 0, 0, 0, 0, 0],
                      [-b] * 6, [0.0] * 6], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 0, 5, 2])
    out = fn(z, y, **kw, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.sum().backward()
    assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()
    # float64 reference with log-softmax (so -log p_y = 2e4 in row 1 although p_y underflows)
    want = ref(z.detach().double().numpy(), y.numpy())
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(out.detach().double().numpy(), want, rtol=16 * eps, atol=16 * eps)
    # rows 0 and 2 are fitted: loss ~ 0, gradient ~ 0
    assert out[0].abs().item() < 1e-6 and z.grad[0].abs().max().item() < 1e-6


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("name,fn,module,kw,ref", CASES, ids=IDS)
def test_low_precision(name, fn, module, kw, ref, dtype):
    z32, y = random_case(seed=6, dtype=torch.float32)
    z = z32.to(dtype).requires_grad_()
    out = fn(z, y, **kw)
    assert out.dtype == dtype and torch.isfinite(out)
    out.backward()
    assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()
    # computed in float32 from the rounded logits
    want = ref(z.detach().double().numpy(), y.numpy()).mean()
    assert out.item() == pytest.approx(want, rel=1e-2, abs=1e-3)


def test_focal_alpha_module_buffer():
    m = FocalLoss(alpha=ALPHA6)
    assert "alpha" in dict(m.named_buffers())
    m = m.float()
    assert m.alpha.dtype == torch.float32
    z, y = random_case(seed=7, dtype=torch.float32)
    np.testing.assert_allclose(m(z, y).item(), ref_focal(z.double().numpy(), y.numpy(), 2.0, ALPHA6).mean(), rtol=1e-5)
    sd = FocalLoss(alpha=ALPHA6).state_dict()
    m2 = FocalLoss(alpha=torch.zeros(6, dtype=torch.float64))
    m2.load_state_dict(sd)
    torch.testing.assert_close(m2.alpha, ALPHA6)
    # the module keeps its own copy
    a = ALPHA6.clone()
    m3 = FocalLoss(alpha=a)
    a.zero_()
    torch.testing.assert_close(m3.alpha, ALPHA6)


def test_meta_and_empty():
    zm = torch.empty(4, 6, device="meta")
    ym = torch.empty(4, dtype=torch.long, device="meta")
    for fn in (mae_loss, gce_loss, sce_loss, focal_loss):
        assert fn(zm, ym, reduction="none").shape == (4,)
        assert fn(zm, ym).shape == ()
        z0 = torch.empty(0, 6, dtype=torch.float64)
        y0 = torch.empty(0, dtype=torch.long)
        assert fn(z0, y0, reduction="sum").item() == 0.0
        assert fn(z0, y0, reduction="none").shape == (0,)


def test_compile_matches_eager():
    z, y = random_case(seed=8, dtype=torch.float32)
    fn = torch.compile(lambda a, b: focal_loss(a, b, alpha=ALPHA6.float()) + gce_loss(a, b) + sce_loss(a, b)
                       + mae_loss(a, b), fullgraph=True, backend="aot_eager")
    eager = focal_loss(z, y, alpha=ALPHA6.float()) + gce_loss(z, y) + sce_loss(z, y) + mae_loss(z, y)
    torch.testing.assert_close(fn(z, y), eager)


FNS = [mae_loss, gce_loss, sce_loss, focal_loss]
MODULES = [MAELoss, GCELoss, SCELoss, FocalLoss]


@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_input_errors_name_the_argument(fn):
    # also a list for either argument; int32 targets are accepted
    assert_input_errors(fn, lambda z, y: [(TypeError, "logits", [[0.0, 1.0]], y),
                                          (TypeError, "target", z, [0, 1, 2, 0])])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_reduction_error(module):
    with pytest.raises(ValueError, match="reduction"):
        module(reduction="batchmean")


BAD_HYPERPARAMETERS = (
    [(gce_loss, GCELoss, {"q": q}) for q in (0.0, -0.1, 1.5, float("nan"))]
    + [(focal_loss, FocalLoss, {"gamma": gamma}) for gamma in (-1.0, float("inf"))]
    + [(sce_loss, SCELoss, kw) for kw in ({"alpha": -0.1}, {"beta": -1.0}, {"A": 0.0}, {"A": 1.0},
                                          {"alpha": float("nan")})]
)


@pytest.mark.parametrize("fn,module,kw", BAD_HYPERPARAMETERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_hyperparameter_errors(fn, module, kw):
    """The function and the module refuse the same values, naming the hyperparameter."""
    (name,) = kw
    with pytest.raises(ValueError, match=name):
        fn(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), **kw)
    with pytest.raises(ValueError, match=name):
        module(**kw)


def test_hyperparameter_type_and_focal_alpha_errors():
    z = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    refused = [
        (TypeError, "q", lambda: gce_loss(z, y, q="0.7")),
        # focal alpha: wrong length, wrong shape, integer tensor, negative scalar, other device
        (ValueError, "alpha", lambda: focal_loss(z, y, alpha=torch.ones(4))),
        (ValueError, "alpha", lambda: FocalLoss(alpha=torch.ones(4))(z, y)),
        (ValueError, "alpha", lambda: focal_loss(z, y, alpha=torch.ones(3, 1))),
        (ValueError, "alpha", lambda: FocalLoss(alpha=torch.ones(3, 1))),
        (TypeError, "alpha", lambda: focal_loss(z, y, alpha=torch.ones(3, dtype=torch.long))),
        (ValueError, "alpha", lambda: focal_loss(z, y, alpha=-0.25)),
        (ValueError, "alpha", lambda: focal_loss(z, y, alpha=torch.ones(3, device="meta"))),
    ]
    for error, name, call in refused:
        with pytest.raises(error, match=name):
            call()
