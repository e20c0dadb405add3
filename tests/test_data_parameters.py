"""Data Parameters (Saxena et al. 2019): Eqs. 3-5 in closed form, the sparse optimizer against an
independent dense SGD, clamping, resume, detection, errors, meta and torch.compile."""
import io
import math

import pytest
import torch
import torch.nn.functional as F

from curriculoss.data_parameters import DataParameters


K, N = 5, 40


def _dp(level, **kw):
    dp = DataParameters(K, N, level=level, **kw).double()
    with torch.no_grad():  # random parameters, so the closed forms are not checked only at sigma = 1
        for p in dp.data_parameters():
            p.copy_(torch.empty_like(p).uniform_(-0.7, 0.7))
    return dp


def _eq4_5(z, y, s):
    """Closed form dL_i/dsigma*_i (Eq. 4 / Eq. 5) for L_i = -log softmax(z_i / s_i)_{y_i}."""
    p = torch.softmax(z / s[:, None], dim=1)
    py = p.gather(1, y[:, None]).squeeze(1)
    q = p / (1 - py)[:, None]
    mask = F.one_hot(y, z.shape[1]).bool()
    expected_other = torch.where(mask, torch.zeros_like(z), q * z).sum(1)
    zy = z.gather(1, y[:, None]).squeeze(1)
    return (1 - py) / s**2 * (zy - expected_other), p


def _dense(g):
    return g.to_dense() if g.is_sparse else g


@pytest.mark.parametrize("level", ["class", "instance", "joint"])
def test_eqs_3_4_5_against_autograd(level):
    dp = _dp(level)
    B = 12
    z = (3 * torch.randn(B, K, dtype=torch.float64)).requires_grad_()
    y = torch.randint(K, (B,))
    idx = torch.randperm(N)[:B]
    loss = F.cross_entropy(dp(z, y, idx), y, reduction="sum")
    loss.backward()
    sc = dp.class_sigma[y] if dp.class_sigma is not None else 0.0
    si = dp.instance_sigma[idx] if dp.instance_sigma is not None else 0.0
    s = sc + si
    dL_ds, p = _eq4_5(z.detach(), y, s)
    # Eq. 3: dL/dz_j = (p_j - 1[j=y]) / sigma*
    torch.testing.assert_close(z.grad, (p - F.one_hot(y, K)) / s[:, None], rtol=1e-12, atol=1e-12)
    # Eq. 4 / 5 through the log parameterisation: dL/dlog(sigma) = sigma * dL/dsigma*
    if level in ("class", "joint"):
        exp = torch.zeros(K, dtype=torch.float64).index_add_(0, y, dp.class_sigma[y] * dL_ds)
        torch.testing.assert_close(_dense(dp.log_class_sigma.grad), exp, rtol=1e-12, atol=1e-12)
    if level in ("instance", "joint"):
        exp = torch.zeros(N, dtype=torch.float64)
        exp[idx] = dp.instance_sigma[idx] * dL_ds
        torch.testing.assert_close(_dense(dp.log_instance_sigma.grad), exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("level", ["class", "instance", "joint"])
def test_every_logit_dtype_against_eqs_3_4_5(level, dtype):
    # The parameters stay float32 (a model in half precision keeps its data parameters in float32);
    # the logits come back in their own dtype, the gradients reach the float32 parameters.
    dp = DataParameters(K, N, level=level)
    with torch.no_grad():
        for p in dp.data_parameters():
            p.copy_(torch.empty_like(p).uniform_(-0.7, 0.7))
    B = 12
    z = (3 * torch.randn(B, K, dtype=torch.float64)).to(dtype).requires_grad_()
    y = torch.randint(K, (B,))
    idx = torch.randperm(N)[:B]
    out = dp(z, y, idx)
    assert out.dtype == dtype
    s = dp.sigma(y, idx).detach().double()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), z.detach().double() / s.to(dtype).double()[:, None], rtol=eps, atol=0.0)
    # the loss in float32 (float64 for float64 logits), as under autocast
    F.cross_entropy(out.to(torch.promote_types(dtype, torch.float32)), y, reduction="sum").backward()
    assert z.grad.dtype == dtype
    assert all(p.grad.dtype == torch.float32 for p in dp.data_parameters())
    dL_ds, p = _eq4_5(z.detach().double(), y, s)
    tol = dict(rtol=16 * eps, atol=16 * eps)
    torch.testing.assert_close(z.grad.double(), (p - F.one_hot(y, K)) / s[:, None], **tol)
    eps = max(eps, torch.finfo(torch.float32).eps)  # the parameters' gradients are float32
    tol = dict(rtol=16 * eps, atol=16 * eps)
    if level in ("class", "joint"):
        exp = torch.zeros(K, dtype=torch.float64).index_add_(0, y, dp.class_sigma[y].detach().double() * dL_ds)
        torch.testing.assert_close(_dense(dp.log_class_sigma.grad).double(), exp, **tol)
    if level in ("instance", "joint"):
        exp = torch.zeros(N, dtype=torch.float64)
        exp[idx] = dp.instance_sigma[idx].detach().double() * dL_ds
        torch.testing.assert_close(_dense(dp.log_instance_sigma.grad).double(), exp, **tol)


def test_gradcheck_forward():
    dp = _dp("joint")
    y = torch.tensor([0, 2, 2, 4])
    idx = torch.tensor([3, 1, 7, 30])
    z = torch.randn(4, K, dtype=torch.float64, requires_grad=True)

    def f(z, lc, li):
        s = lc.exp()[y] + li.exp()[idx]  # independent dense formulation
        return z / s[:, None]

    lc = dp.log_class_sigma.detach().clone().requires_grad_()
    li = dp.log_instance_sigma.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (z, lc, li))
    torch.testing.assert_close(dp(z, y, idx), f(z, lc, li))


def test_initial_values_and_views():
    j = DataParameters(K, N, level="joint")
    torch.testing.assert_close(j.class_sigma, torch.ones(K))
    torch.testing.assert_close(j.instance_sigma, torch.full((N,), 0.001))  # the joint curriculum: instances start at 0.001
    assert j.class_sigma.requires_grad is False
    i = DataParameters(None, N, level="instance")
    torch.testing.assert_close(i.instance_sigma, torch.ones(N))
    assert i.class_sigma is None
    c = DataParameters(K, level="class", init_class=2.0)
    torch.testing.assert_close(c.class_sigma, torch.full((K,), 2.0))
    assert c.instance_sigma is None
    z = torch.randn(3, K)
    y = torch.tensor([0, 1, 4])
    torch.testing.assert_close(c(z, y), z / 2.0)  # index not needed at class level
    torch.testing.assert_close(c.sigma(y, None), torch.full((3,), 2.0))
    torch.testing.assert_close(j.sigma(y, torch.tensor([0, 1, 2])), torch.full((3,), 1.001))


def test_class_grad_batch_mean_is_reference_and_class_mean_is_mean_over_class_samples():
    """A batch-mean loss gives class c the sum of its samples' per-sample gradients / B (as the
    reference implementation); class_grad='class_mean' steps with their mean over the class's samples.
    An instance parameter's gradient comes from its own sample only."""
    B = 10
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    idx = torch.arange(B) * 3
    z = 2 * torch.randn(B, K, dtype=torch.float64)
    for mode in ("batch_mean", "class_mean"):
        dp = _dp("joint")
        c0, i0 = dp.log_class_sigma.detach().clone(), dp.log_instance_sigma.detach().clone()
        sc, si = dp.class_sigma[y], dp.instance_sigma[idx]
        g, _ = _eq4_5(z, y, sc + si)  # per-sample dL_i/dsigma*_i
        g_class = sc * g  # per-sample dL_i/dlog sigma^class
        opt = dp.optimizer(class_lr=1.0, instance_lr=1.0, momentum=0.0, class_weight_decay=0.0, class_grad=mode)
        dp.log_class_sigma.grad = None
        F.cross_entropy(dp(z, y, idx), y).backward()
        opt.step()
        for c in range(K):
            sel = y == c
            if sel.any():
                expected = g_class[sel].mean() if mode == "class_mean" else g_class[sel].sum() / B
            else:
                expected = torch.tensor(0.0, dtype=torch.float64)
            torch.testing.assert_close(c0[c] - dp.log_class_sigma.detach()[c], expected, rtol=1e-10, atol=1e-13)
        assert torch.equal(dp.log_class_sigma.detach()[4], c0[4])  # class 4 absent
        torch.testing.assert_close(i0[idx] - dp.log_instance_sigma.detach()[idx], si * g / B, rtol=1e-10, atol=1e-13)

    # own sample only: changing the other samples' logits leaves an instance's gradient unchanged
    dp = _dp("instance")
    grads = []
    for seed in (1, 2):
        z2 = z.clone()
        z2[1:] = torch.randn(B - 1, K, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        dp.zero_grad()
        F.cross_entropy(dp(z2, y, idx), y, reduction="sum").backward()
        grads.append(_dense(dp.log_instance_sigma.grad)[idx[0]].clone())
    assert torch.equal(grads[0], grads[1])


class DenseReferenceSGD:
    """Plain SGD with momentum applied row by row to the rows listed as present (written apart from
    SparseSGD: a Python loop over rows, float64)."""

    def __init__(self, w, lr, momentum, wd, clamp=None):
        self.w, self.lr, self.m, self.wd, self.clamp = w.clone(), lr, momentum, wd, clamp
        self.buf = torch.zeros_like(w)

    def step(self, grad, present):
        for r in sorted(set(present)):
            d = grad[r] + self.wd * self.w[r]
            self.buf[r] = self.m * self.buf[r] + d
            self.w[r] = self.w[r] - self.lr * self.buf[r]
            if self.clamp is not None:
                self.w[r] = min(max(self.w[r], self.clamp[0]), self.clamp[1])


def _dense_loss_grads(lc, li, z, y, idx):
    lc = lc.clone().requires_grad_()
    li = li.clone().requires_grad_()
    s = lc.exp()[y] + li.exp()[idx]
    F.cross_entropy(z / s[:, None], y).backward()
    return lc.grad, li.grad


def test_optimizer_matches_dense_reference_on_present_rows_only():
    dp = _dp("joint", clamp=None)
    lr_c, lr_i, mom, wd_c, wd_i = 0.3, 0.5, 0.9, 5e-2, 1e-2
    opt = dp.optimizer(class_lr=lr_c, instance_lr=lr_i, momentum=mom, class_weight_decay=wd_c,
                       instance_weight_decay=wd_i, class_grad="batch_mean",  # the autograd gradient as is
                       weight_decay_mode="per_row")  # standard L2, once per present row
    ref_c = DenseReferenceSGD(dp.log_class_sigma.detach(), lr_c, mom, wd_c)
    ref_i = DenseReferenceSGD(dp.log_instance_sigma.detach(), lr_i, mom, wd_i)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.arange(0, 8), torch.arange(4, 12), torch.arange(20, 28), torch.arange(0, 8),
               torch.tensor([5, 5, 30, 31, 5])]  # overlapping, disjoint, repeated, duplicate rows
    batches += [torch.randint(N, (9,), generator=gen) for _ in range(25)]
    for step, idx in enumerate(batches):
        B = idx.shape[0]
        y = torch.randint(K - 1, (B,), generator=gen)  # class K-1 never present
        z = 3 * torch.randn(B, K, dtype=torch.float64, generator=gen)
        gc, gi = _dense_loss_grads(ref_c.w, ref_i.w, z, y, idx)
        before_w, before_b = dp.log_instance_sigma.detach().clone(), None
        if step > 0:
            before_b = opt.state[dp.log_instance_sigma]["momentum_buffer"].clone()
        opt.zero_grad()
        F.cross_entropy(dp(z, y, idx), y).backward()
        opt.step()
        ref_c.step(gc, y.tolist())
        ref_i.step(gi, idx.tolist())
        torch.testing.assert_close(dp.log_class_sigma.detach(), ref_c.w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(dp.log_instance_sigma.detach(), ref_i.w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.state[dp.log_instance_sigma]["momentum_buffer"], ref_i.buf,
                                   rtol=1e-12, atol=1e-14)
        absent = torch.ones(N, dtype=torch.bool)
        absent[idx] = False
        # absent rows: parameter and momentum bit-identical (no weight decay, no momentum decay)
        assert torch.equal(dp.log_instance_sigma.detach()[absent], before_w[absent])
        if before_b is not None:
            assert torch.equal(opt.state[dp.log_instance_sigma]["momentum_buffer"][absent], before_b[absent])
    assert opt.state[dp.log_class_sigma]["step"] == len(batches)
    # the never-present class kept its initial value exactly, although weight decay is on
    assert torch.equal(dp.log_class_sigma.detach()[K - 1], ref_c.w[K - 1])


def test_weight_decay_only_on_present_rows_with_zero_gradient():
    """A present row with a zero loss gradient still gets weight decay; absent rows do not."""
    dp = DataParameters(None, 6, level="instance", init_instance=2.0, clamp=None, dtype=torch.float64)
    opt = dp.optimizer(instance_lr=0.5, momentum=0.0, instance_weight_decay=0.1)
    # uniform logits and sigma: gradient wrt sigma is zero (z_y equals the mean of the other logits)
    z = torch.zeros(2, 3, dtype=torch.float64)
    F.cross_entropy(dp(z, torch.tensor([0, 1]), torch.tensor([1, 4])), torch.tensor([0, 1])).backward()
    opt.step()
    w0 = math.log(2.0)
    expected = torch.full((6,), w0, dtype=torch.float64)
    expected[[1, 4]] = w0 - 0.5 * 0.1 * w0
    got = dp.log_instance_sigma.detach()
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    assert torch.equal(got[[0, 2, 3, 5]], expected[[0, 2, 3, 5]])  # absent rows untouched, bit for bit


def test_clamp_matches_reference_projection():
    dp = DataParameters(K, N, level="joint")  # default clamp (1/20, 20); instance init 0.001 < 1/20
    assert dp.clamp == (0.05, 20.0)
    opt = dp.optimizer(class_lr=1e3, instance_lr=0.0)
    y = torch.tensor([0, 1])
    z = torch.tensor([[5.0, 0, 0, 0, 0], [5.0, 0, 0, 0, 0]])  # class 1 misclassified -> sigma_1 grows
    F.cross_entropy(dp(z, y, torch.tensor([0, 1])), y).backward()
    opt.step()
    # the reference projects the whole tensor after each step: unseen instances are lifted to 1/20
    torch.testing.assert_close(dp.instance_sigma, torch.full((N,), 0.05))
    assert dp.class_sigma[1] == pytest.approx(20.0)
    assert dp.class_sigma[0] >= 0.05 - 1e-7
    # later steps only move (and project) present rows
    before = dp.log_instance_sigma.detach().clone()
    opt.zero_grad()
    F.cross_entropy(dp(z, y, torch.tensor([5, 6])), y).backward()
    opt.step()
    assert torch.equal(dp.log_instance_sigma.detach(), before)  # lr 0: unchanged, still in range
    off = DataParameters(K, N, clamp=None, level="joint")
    o2 = off.optimizer(class_lr=1e3)
    F.cross_entropy(off(z, y, torch.tensor([0, 1])), y).backward()
    o2.step()
    assert off.class_sigma[1] > 20.0 and off.instance_sigma[2] == pytest.approx(0.001)


def _train(dp, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y = torch.randint(K, (7,), generator=gen)
        idx = torch.randint(N, (7,), generator=gen)
        z = 2 * torch.randn(7, K, generator=gen)
        opt.zero_grad()
        F.cross_entropy(dp(z, y, idx), y).backward()
        opt.step()


def test_state_dict_round_trip_continues_bit_identically():
    dp = DataParameters(K, N, level="joint")
    opt = dp.optimizer(class_lr=0.2, instance_lr=0.4)
    _train(dp, opt, 6, seed=1)
    buf = io.BytesIO()
    torch.save({"dp": dp.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    dp2 = DataParameters(K, N, level="joint")
    opt2 = dp2.optimizer(class_lr=0.2, instance_lr=0.4)
    dp2.load_state_dict(saved["dp"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.state[dp2.log_instance_sigma]["step"] == 6
    _train(dp, opt, 5, seed=2)
    _train(dp2, opt2, 5, seed=2)
    for a, b in zip(dp.data_parameters(), dp2.data_parameters()):
        assert torch.equal(a, b)
    for p, q in zip(dp.data_parameters(), dp2.data_parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


def test_detection_background_uses_batch_mean_of_boxes():
    dp = _dp("instance")
    logits = torch.randn(7, K, dtype=torch.float64)
    box_index = torch.tensor([3, 17, 25])
    anchor_box = torch.tensor([0, 0, 0, 0, -1, 1, -1])  # box 3 has four anchors: still counted once
    anchor_target = torch.tensor([1, 1, 1, 1, 0, 2, 0])
    s_box = dp.instance_sigma[box_index]
    mean = s_box.mean()  # over the three boxes, including box 25 that has no anchor
    expected = torch.stack([s_box[0]] * 4 + [mean, s_box[1], mean])
    out = dp.forward_detection(logits, anchor_target, anchor_box, box_index)
    torch.testing.assert_close(out, logits / expected[:, None])
    torch.testing.assert_close(dp.last_sigma, expected)
    # default: background anchors do not train the boxes; a box learns from its own anchors only
    F.cross_entropy(out, anchor_target, reduction="sum").backward()
    g = _dense(dp.log_instance_sigma.grad)
    dL_ds, _ = _eq4_5(logits, anchor_target, expected)
    torch.testing.assert_close(g[3], s_box[0] * dL_ds[:4].sum())
    torch.testing.assert_close(g[17], s_box[1] * dL_ds[5])
    assert g[25] == 0
    # background_grad=True: the mean's gradient reaches every box of the batch
    dp.zero_grad()
    F.cross_entropy(dp.forward_detection(logits, anchor_target, anchor_box, box_index, background_grad=True),
                    anchor_target, reduction="sum").backward()
    g2 = _dense(dp.log_instance_sigma.grad)
    bg = dL_ds[[4, 6]].sum()
    torch.testing.assert_close(g2[25], s_box[2] * bg / 3)
    torch.testing.assert_close(g2[3], s_box[0] * (dL_ds[:4].sum() + bg / 3))


def test_detection_joint_and_empty_batch():
    t = torch.tensor([0, 2, 0])  # the anchors' targets
    dp = _dp("joint")
    logits = torch.randn(3, K, dtype=torch.float64)
    out = dp.forward_detection(logits, t, torch.tensor([-1, 0, -1]), torch.tensor([9]))
    s = dp.class_sigma[t] + dp.instance_sigma[9]
    torch.testing.assert_close(out, logits / s[:, None])
    # no box in the mini-batch: background anchors use the initial instance value; nothing is present
    opt = dp.optimizer()
    before = dp.log_instance_sigma.detach().clone()
    out = dp.forward_detection(logits, t, torch.full((3,), -1), torch.zeros(0, dtype=torch.long))
    torch.testing.assert_close(out, logits / (dp.class_sigma[t] + 0.001)[:, None])
    F.cross_entropy(out, t).backward()
    opt.step()
    assert torch.equal(dp.log_instance_sigma.detach(), before)


@pytest.mark.parametrize("bad, match", [
    (dict(target=torch.tensor([0.0, 1.0, 2.0])), "target"),
    (dict(target=torch.tensor([0, 1])), "target"),
    (dict(target=torch.tensor([0, 1, K])), "target"),
    (dict(index=torch.tensor([0, 1, N])), "index"),
    (dict(index=torch.tensor([0, -1, 2])), "index"),
    (dict(index=torch.tensor([[0, 1, 2]])), "index"),
    (dict(index=torch.tensor([True, False, True])), "index"),
    (dict(index=None), "index"),
    (dict(logits=torch.randn(3, K + 1)), "logits"),
])
def test_bad_inputs_raise_before_state_changes(bad, match):
    dp = DataParameters(K, N, level="joint")
    opt = dp.optimizer()
    _train(dp, opt, 2, seed=0)
    snap = {k: v.clone() for k, v in dp.state_dict().items()}
    osnap = [opt.state[p]["momentum_buffer"].clone() for p in dp.data_parameters()]
    args = dict(logits=torch.randn(3, K), target=torch.tensor([0, 1, 2]), index=torch.tensor([0, 1, 2]))
    args.update(bad)
    opt.zero_grad()
    with pytest.raises(ValueError, match=match):
        dp(args["logits"], args["target"], args["index"])
    opt.step()  # nothing has a gradient: nothing may change
    for k, v in dp.state_dict().items():
        assert torch.equal(v, snap[k])
    for p, b in zip(dp.data_parameters(), osnap):
        assert torch.equal(opt.state[p]["momentum_buffer"], b)


def test_bad_constructor_and_detection_args():
    with pytest.raises(ValueError, match="level"):
        DataParameters(K, N, level="sample")
    with pytest.raises(ValueError, match="num_instances"):
        DataParameters(K, None, level="joint")
    with pytest.raises(ValueError, match="init_instance"):
        DataParameters(K, N, init_instance=0.0, level="joint")
    with pytest.raises(ValueError, match="clamp"):
        DataParameters(K, N, clamp=(2.0, 1.0), level="joint")
    with pytest.raises(ValueError, match="class_grad"):
        DataParameters(K, N, level="joint").optimizer(class_grad="median")
    dp = DataParameters(K, N, level="joint")
    z = torch.randn(3, K)
    t = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="anchor_box"):
        dp.forward_detection(z, t, torch.tensor([0, 2, -1]), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="box_index"):
        dp.forward_detection(z, t, torch.tensor([0, 1, -1]), torch.tensor([4, N]))
    with pytest.raises(ValueError, match="anchor_target"):
        dp.forward_detection(z, t.float(), torch.tensor([0, 1, -1]), torch.tensor([4, 5]))


def test_meta_device():
    dp = DataParameters(K, 2_400_000, device="meta", level="joint")
    z = torch.randn(4, K, device="meta", requires_grad=True)
    y = torch.zeros(4, dtype=torch.long, device="meta")
    out = dp(z, y, torch.zeros(4, dtype=torch.long, device="meta"))
    assert out.shape == (4, K) and out.device.type == "meta"
    assert dp.sigma(y, y).shape == (4,)
    out = dp.forward_detection(z, y, torch.zeros(4, dtype=torch.long, device="meta"),
                               torch.zeros(2, dtype=torch.long, device="meta"))
    assert out.shape == (4, K)


def test_device_and_dense_gradient_fallback(device):
    dp = DataParameters(K, N, level="joint").to(device)
    opt = dp.optimizer(class_lr=0.5, instance_lr=0.5, class_grad="batch_mean")
    y = torch.tensor([0, 3], device=device)
    idx = torch.tensor([2, 9], device=device)
    z = torch.randn(2, K, device=device)
    F.cross_entropy(dp(z, y, idx), y).backward()
    sparse_grads = [_dense(p.grad).clone() for p in dp.data_parameters()]
    # a dense gradient (as under torch.compile): its non-zero rows are the present ones
    dp2 = DataParameters(K, N, level="joint").to(device)
    opt2 = dp2.optimizer(class_lr=0.5, instance_lr=0.5, class_grad="batch_mean", weight_decay_mode="per_row")
    opt = dp.optimizer(class_lr=0.5, instance_lr=0.5, class_grad="batch_mean", weight_decay_mode="per_row")
    for p, g in zip(dp2.data_parameters(), sparse_grads):
        p.grad = g
    opt.step()
    opt2.step()
    for a, b in zip(dp.data_parameters(), dp2.data_parameters()):
        torch.testing.assert_close(a, b)
    # the class mean needs the per-sample entries of the sparse gradient: a dense one is refused
    dp3 = DataParameters(K, N, level="joint").to(device)
    opt3 = dp3.optimizer(class_grad="class_mean")
    for p, g in zip(dp3.data_parameters(), sparse_grads):
        p.grad = g
    with pytest.raises(ValueError, match="class_mean"):
        opt3.step()
    # so does the per-occurrence weight decay (the default), which counts the sparse gradient's entries
    opt4 = dp3.optimizer()
    with pytest.raises(ValueError, match="weight_decay_mode"):
        opt4.step()


def test_torch_compile_fullgraph():
    dp = DataParameters(K, N, level="joint")
    y = torch.tensor([0, 1, 1, 4])
    idx = torch.tensor([3, 8, 8, 20])
    z = torch.randn(4, K, requires_grad=True)

    def f(z, y, idx):
        return F.cross_entropy(dp(z, y, idx), y)

    compiled = torch.compile(f, fullgraph=True, backend="eager" if False else "inductor")
    out = compiled(z, y, idx)
    out.backward()
    dense = [p.grad.clone() for p in dp.data_parameters()]
    dp.zero_grad()
    ref = f(z, y, idx)
    ref.backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(dense, dp.data_parameters()):
        torch.testing.assert_close(_dense(g), _dense(p.grad))


class ReferenceTrainingStep:
    """A port of the reference's data-parameter update, written apart from the library with dense tensors:

    - the loss is ``F.cross_entropy(logits / sigma*[:, None], y)`` plus
      ``0.5 * wd_class * sum(log_class[y] ** 2) + 0.5 * wd_inst * sum(log_inst[idx] ** 2)``, the parameters
      *gathered for the mini-batch*;
    - its ``SparseSGD``: a dense ``torch.optim.SGD`` step (momentum, no weight decay) after which the
      rows whose gradient is exactly 0, parameter and momentum alike, are put back;
    - then the whole tensors are clamped to [log(1/20), log(20)].
    """

    def __init__(self, log_class, log_inst, lr_c, lr_i, mom, wd_c, wd_i):
        self.lc = torch.nn.Parameter(log_class.detach().clone())
        self.li = torch.nn.Parameter(log_inst.detach().clone())
        self.wd_c, self.wd_i = wd_c, wd_i
        self.opt = torch.optim.SGD([{"params": [self.lc], "lr": lr_c}, {"params": [self.li], "lr": lr_i}],
                                   momentum=mom, weight_decay=0.0)

    def step(self, z, y, idx):
        self.opt.zero_grad()
        c, i = self.lc[y], self.li[idx]
        loss = F.cross_entropy(z / (c.exp() + i.exp())[:, None], y)
        loss = loss + 0.5 * self.wd_c * (c ** 2).sum() + 0.5 * self.wd_i * (i ** 2).sum()
        loss.backward()
        saved = []
        for p in (self.lc, self.li):
            skip = p.grad == 0
            buf = self.opt.state[p].get("momentum_buffer")
            saved.append((p, skip, p.detach().clone(), None if buf is None else buf.clone()))
        self.opt.step()
        with torch.no_grad():
            for p, skip, before, buf_before in saved:
                p[skip] = before[skip]
                buf = self.opt.state[p]["momentum_buffer"]
                buf[skip] = 0.0 if buf_before is None else buf_before[skip]
                p.clamp_(math.log(1 / 20), math.log(20))


def test_default_weight_decay_matches_reference_per_occurrence():
    """50 steps, joint level, class and instance wd 1e-2, duplicated indices: within 1e-6 in log sigma."""
    n, c, b = 1000, 10, 64
    dp = DataParameters(c, n, level="joint").double()
    lr_c, lr_i, mom, wd = 0.1, 0.2, 0.9, 1e-2
    opt = dp.optimizer(class_lr=lr_c, instance_lr=lr_i, momentum=mom, class_weight_decay=wd,
                       instance_weight_decay=wd)  # defaults otherwise: per-occurrence decay, batch-mean gradient
    ref = ReferenceTrainingStep(dp.log_class_sigma, dp.log_instance_sigma, lr_c, lr_i, mom, wd, wd)
    # alongside, the same with per-row decay, which the last assertion tells apart from the reference
    dp2 = DataParameters(c, n, level="joint").double()
    opt2 = dp2.optimizer(class_lr=lr_c, instance_lr=lr_i, momentum=mom, class_weight_decay=wd,
                         instance_weight_decay=wd, weight_decay_mode="per_row")
    gen = torch.Generator().manual_seed(0)
    for step in range(50):
        idx = torch.randint(n, (b,), generator=gen)
        idx[:4] = idx[4:8]  # duplicated instances in the batch
        y = torch.randint(c, (b,), generator=gen)
        z = 3 * torch.randn(b, c, dtype=torch.float64, generator=gen)
        for module, optimizer in ((dp, opt), (dp2, opt2)):
            optimizer.zero_grad()
            F.cross_entropy(module(z, y, idx), y).backward()
            optimizer.step()
        ref.step(z, y, idx)
    assert (dp.log_class_sigma.detach() - ref.lc.detach()).abs().max() < 1e-6
    assert (dp.log_instance_sigma.detach() - ref.li.detach()).abs().max() < 1e-6
    # and the decay is what makes the difference: per-row decay drifts away from the reference
    assert (dp2.log_class_sigma.detach() - ref.lc.detach()).abs().max() > 1e-3


def test_weight_decay_mode_validation_and_old_checkpoints():
    dp = DataParameters(K, N, level="joint")
    with pytest.raises(ValueError, match="weight_decay_mode"):
        dp.optimizer(weight_decay_mode="per_class")
    # an optimizer state saved before the option existed resumes with per-row decay (its behaviour then)
    opt = dp.optimizer(weight_decay_mode="per_row")
    state = opt.state_dict()
    for g in state["param_groups"]:
        del g["weight_decay_mode"]
    dp2 = DataParameters(K, N, level="joint")
    dp2.load_state_dict(dp.state_dict())
    opt_old = dp2.optimizer()
    opt_old.load_state_dict(state)
    y, idx = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3])
    z = torch.randn(3, K)
    for d, o in ((dp, opt), (dp2, opt_old)):
        F.cross_entropy(d(z, y, idx), y).backward()
        o.step()
    torch.testing.assert_close(dp.log_class_sigma, dp2.log_class_sigma, rtol=0, atol=0)


class _Net(torch.nn.Module):
    """A model that holds its data parameters, as Lightning modules and Trainer models do."""

    def __init__(self, dp=None):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, K))
        self.dp = dp

    def forward(self, x):
        return self.body(x)


def _train_20_steps(make_optimizer, inside: bool, level: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    dp = DataParameters(K, N, level=level)
    net = _Net(dp if inside else None)
    opt, dp_opt = make_optimizer(net.parameters()), dp.optimizer()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 6, generator=gen), torch.randint(0, K, (N,), generator=gen)
    for _ in range(20):
        index = torch.randperm(N, generator=gen)[:8]
        loss = F.cross_entropy(dp(net(x[index]), y[index], index), y[index])
        opt.zero_grad()
        dp_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        dp_opt.step()
    return [p.detach().clone() for p in dp.data_parameters()], [p.detach().clone() for p in net.body.parameters()]


OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adam_weight_decay": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("level", ["instance", "joint"])
def test_a_model_holding_data_parameters_trains_with_any_optimizer(name, level):
    inside, inside_model = _train_20_steps(OPTIMIZERS[name], True, level)
    outside, outside_model = _train_20_steps(OPTIMIZERS[name], False, level)
    assert any(not torch.equal(p, torch.full_like(p, p[0])) for p in inside)  # they did learn
    for a, b in zip(inside, outside, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(inside_model, outside_model, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_data_parameters_are_state_but_not_parameters(tmp_path):
    net = _Net(DataParameters(K, N, level="joint"))
    assert [n for n, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]
    state = net.state_dict()
    assert {"dp.log_class_sigma", "dp.log_instance_sigma"} <= set(state)
    with torch.no_grad():
        net.dp.log_instance_sigma.uniform_(-1, 1)
    torch.save(net.state_dict(), tmp_path / "ckpt.pt")
    other = _Net(DataParameters(K, N, level="joint"))
    other.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))  # strict
    assert torch.equal(other.dp.log_instance_sigma, net.dp.log_instance_sigma)
    missing = other.load_state_dict({k: v for k, v in state.items() if k != "dp.log_class_sigma"}, strict=False)
    assert missing.missing_keys == ["dp.log_class_sigma"] and missing.unexpected_keys == []  # as torch reports
    with pytest.raises(RuntimeError, match="dp.log_class_sigma"):
        other.load_state_dict({k: v for k, v in state.items() if k != "dp.log_class_sigma"})
    with pytest.raises(RuntimeError, match="size mismatch for dp.log_instance_sigma"):
        other.load_state_dict({**state, "dp.log_instance_sigma": torch.zeros(N + 1)})


def test_device_and_dtype_moves_keep_the_optimizers_references():
    dp = DataParameters(K, N, level="instance")
    opt = dp.optimizer()
    parameter = dp.log_instance_sigma
    dp.double()
    assert dp.log_instance_sigma is parameter and parameter.dtype == torch.float64
    F.cross_entropy(dp(torch.randn(4, K, dtype=torch.float64), torch.zeros(4, dtype=torch.long),
                       torch.arange(4)), torch.zeros(4, dtype=torch.long)).backward()
    opt.step()
    assert not torch.equal(parameter[:4], torch.zeros(4, dtype=torch.float64))
    dp.zero_grad()
    assert parameter.grad is None


def test_eval_mode_uses_the_logits_as_they_are():
    dp = DataParameters(K, N, level="joint")
    logits = torch.randn(4, K)
    train_out = dp(logits, torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert not torch.equal(train_out, logits)
    last = dp.last_sigma
    dp.eval()
    out = dp(logits, torch.zeros(4, dtype=torch.long), torch.full((4,), 10 * N))  # a validation set's indices
    assert out is logits and dp.last_sigma is last
