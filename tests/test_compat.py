"""Unit tests of every shim in ``rtdetr_jittor.compat`` against PyTorch.

Each shim answers one measured Jittor-vs-torch difference; each test feeds the same
inputs to the shim and to the torch operation it stands for and compares values,
dtypes and gradients (gradients through ``loss = sum(out * w)`` with a random ``w``,
so every output element carries a distinct upstream gradient).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdetr_jittor._env import jt
from jittor import nn as jnn
from rtdetr_jittor import compat


def _jt(a):
    arr = np.asarray(a)
    # jt.array would wrap int64 to int32
    return jt.array(arr, dtype=str(arr.dtype)) if arr.dtype.kind in "iu" else jt.array(arr)


def _t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def _torch_grads(fn, inputs, w):
    ts = [_t(a, grad=True) for a in inputs]
    out = fn(*ts)
    (out * _t(w)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _jt_grads(fn, inputs, w):
    vs = [_jt(a) for a in inputs]
    out = fn(*vs)
    grads = jt.grad((out * _jt(w)).sum(), vs)
    return out.numpy(), [g.numpy() for g in grads]


# ---------------------------------------------------------------- clamp

@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (-1.0, None), (None, 1.0), (0.5, 0.5)])
def test_clamp_value_and_gradient_match_torch_including_at_the_bounds(lo, hi):
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], np.float32)
    w = np.linspace(0.5, 2.0, x.size).astype(np.float32)
    t_out, (t_grad,) = _torch_grads(lambda a: torch.clamp(a, min=lo, max=hi), [x], w)
    j_out, (j_grad,) = _jt_grads(lambda a: compat.clamp(a, min=lo, max=hi), [x], w)
    np.testing.assert_array_equal(j_out, t_out)
    np.testing.assert_array_equal(j_grad, t_grad)


def test_clamp_gradient_is_one_at_the_bounds():
    x = _jt(np.array([0.0, 1.0], np.float32))
    np.testing.assert_array_equal(jt.grad(compat.clamp(x, min=0.0, max=1.0).sum(), x).numpy(), [1.0, 1.0])


def test_clamp_propagates_nan_like_torch():
    x = np.array([np.nan, 2.0, -2.0], np.float32)
    expected = torch.clamp(_t(x), min=-1.0, max=1.0).numpy()
    np.testing.assert_array_equal(compat.clamp(_jt(x), min=-1.0, max=1.0).numpy(), expected)


# ---------------------------------------------------------------- topk / argmax / max

@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dim", [-1, 0])
def test_topk_values_indices_and_int64_dtype_match_torch(largest, dim):
    rng = np.random.default_rng(1)
    x = rng.permutation(60).reshape(6, 10).astype(np.float32)  # no ties: index order is defined
    tv, ti = torch.topk(_t(x), 4, dim=dim, largest=largest)
    jv, ji = compat.topk(_jt(x), 4, dim=dim, largest=largest)
    assert ji.dtype == jt.int64
    np.testing.assert_array_equal(jv.numpy(), tv.numpy())
    np.testing.assert_array_equal(ji.numpy(), ti.numpy())


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_argmax_and_max_values_match_torch(dim, keepdim):
    rng = np.random.default_rng(2)
    x = rng.permutation(120).reshape(4, 5, 6).astype(np.float32)
    idx = compat.argmax(_jt(x), dim, keepdim=keepdim)
    assert idx.dtype == jt.int64
    np.testing.assert_array_equal(idx.numpy(), torch.argmax(_t(x), dim, keepdim=keepdim).numpy())
    np.testing.assert_array_equal(compat.max_values(_jt(x), dim, keepdim=keepdim).numpy(),
                                  torch.max(_t(x), dim, keepdim=keepdim).values.numpy())


# ---------------------------------------------------------------- floor_divide

def test_floor_divide_rounds_toward_minus_infinity_on_negatives():
    a = np.array([-7, 7, -6, 6, -1, 1, 0], np.int64)
    for b in (3, -3):
        got = compat.floor_divide(_jt(a), b).numpy()
        np.testing.assert_array_equal(got, torch.floor_divide(_t(a), b).numpy())


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=16),
       st.integers(1, 2**20), st.booleans())
def test_floor_divide_is_exact_for_int64_of_any_size(values, divisor, negative):
    b = -divisor if negative else divisor
    a = np.array(values, np.int64)
    got = compat.floor_divide(_jt(a), b)
    np.testing.assert_array_equal(got.numpy(), torch.floor_divide(_t(a), b).numpy())


def test_floor_divide_by_a_var_and_on_floats():
    a = np.array([-7, 7, -6, 5], np.int64)
    b = np.array([2, -2, -4, 3], np.int64)
    np.testing.assert_array_equal(compat.floor_divide(_jt(a), _jt(b)).numpy(),
                                  torch.floor_divide(_t(a), _t(b)).numpy())
    af = np.array([-7.5, 7.5, -6.0, 0.25], np.float32)
    np.testing.assert_array_equal(compat.floor_divide(_jt(af), 2.0).numpy(),
                                  torch.floor_divide(_t(af), 2.0).numpy())


# ---------------------------------------------------------------- binary_cross_entropy_with_logits

def test_binary_cross_entropy_with_logits_matches_torch_on_large_logits_soft_targets_and_weights():
    logits = np.array([-100.0, -30.0, -17.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 17.0, 30.0, 100.0], np.float32)
    logits = np.stack([logits] * 3)
    targets = np.stack([np.zeros(11), np.full(11, 0.37), np.ones(11)]).astype(np.float32)
    weight = np.linspace(0.1, 3.0, logits.size).reshape(logits.shape).astype(np.float32)
    w = np.linspace(-1.0, 2.0, logits.size).reshape(logits.shape).astype(np.float32)

    def t_fn(x, y):
        return F.binary_cross_entropy_with_logits(x, y, weight=_t(weight), reduction="none")

    def j_fn(x, y):
        return compat.binary_cross_entropy_with_logits(x, y, weight=_jt(weight))

    t_out, (t_gx, t_gy) = _torch_grads(t_fn, [logits, targets], w)
    j_out, (j_gx, j_gy) = _jt_grads(j_fn, [logits, targets], w)
    assert np.isfinite(j_out).all() and np.isfinite(j_gx).all()
    # measured: values max relative 1.2e-7 (absolute 1.4e-14), logit gradient max absolute
    # 2.4e-7 (relative 1.9e-7), target gradient exact
    np.testing.assert_allclose(j_out, t_out, rtol=1e-6, atol=2e-7)
    np.testing.assert_allclose(j_gx, t_gx, rtol=1e-6, atol=4e-7)
    np.testing.assert_allclose(j_gy, t_gy, rtol=1e-6, atol=4e-7)


def test_binary_cross_entropy_with_logits_gradient_at_zero_logit_is_sigmoid_minus_target():
    x = _jt(np.zeros(3, np.float32))
    y = _jt(np.array([0.0, 0.5, 1.0], np.float32))
    np.testing.assert_allclose(jt.grad(compat.binary_cross_entropy_with_logits(x, y).sum(), x).numpy(), [0.5, 0.0, -0.5])


# ---------------------------------------------------------------- BatchNorm2d

def _random_bn_state(c, rng):
    return {
        "weight": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "bias": rng.normal(0, 0.5, c).astype(np.float32),
        "running_mean": rng.normal(0, 1, c).astype(np.float32),
        "running_var": rng.uniform(0.5, 2.0, c).astype(np.float32),
        "num_batches_tracked": np.array(7, np.int64),
    }


def _max_err(got, exact):
    return float(np.abs(np.asarray(got, np.float64) - exact).max())


def _assert_as_accurate_as_torch(name, jt_value, torch_value, exact, floor):
    """Jittor's error against the float64 result is at most 1.5x torch float32's, or ``floor``."""
    jt_err, torch_err = _max_err(jt_value, exact), _max_err(torch_value, exact)
    assert jt_err <= max(1.5 * torch_err, floor), (name, jt_err, torch_err)


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([1.0, 50.0, 1e3]), st.sampled_from([-1.0, 1.0]), st.integers(1, 3), st.integers(0, 2**16))
def test_batchnorm2d_train_step_matches_torch_including_large_mean_inputs(scale_mean, sign, batch, seed):
    rng = np.random.default_rng(seed)
    c = 5
    state = _random_bn_state(c, rng)
    jbn = compat.BatchNorm2d(c)
    compat.load_state_dict_checked(jbn, state)
    jbn.train()
    torch_bns = {}
    for dtype in (torch.float32, torch.float64):
        torch_bns[dtype] = torch.nn.BatchNorm2d(c).to(dtype)
        torch_bns[dtype].load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        torch_bns[dtype].train()

    # channel means large against the spread: the case E[x^2]-E[x]^2 gets wrong
    x = (sign * scale_mean * rng.uniform(0.5, 1.0, (1, c, 1, 1))
         + rng.normal(0, 1, (batch, c, 6, 7))).astype(np.float32)
    w = rng.normal(0, 1, x.shape).astype(np.float32)

    results = {}
    for dtype, tbn in torch_bns.items():
        tx = torch.tensor(x, dtype=dtype, requires_grad=True)
        out = tbn(tx)
        (out * torch.tensor(w, dtype=dtype)).sum().backward()
        results[dtype] = [a.detach().numpy() for a in (out, tx.grad, tbn.weight.grad, tbn.bias.grad,
                                                        tbn.running_mean, tbn.running_var)]
    jx = _jt(x)
    j_out = jbn(jx)
    j_grads = jt.grad((j_out * _jt(w)).sum(), [jx, jbn.weight, jbn.bias])
    j_results = [j_out.numpy()] + [g.numpy() for g in j_grads] + [jbn.running_mean.numpy(), jbn.running_var.numpy()]

    names = ["output", "d_input", "d_weight", "d_bias", "running_mean", "running_var"]
    for name, jv, tv, ev in zip(names, j_results, results[torch.float32], results[torch.float64]):
        # floor: 4 float32 ulps of the compared values (running_mean ~1e3: 2.4e-4)
        floor = max(4 * float(np.spacing(np.float32(np.abs(ev).max()))), 2e-6)
        _assert_as_accurate_as_torch(name, jv, tv, ev, floor)
    assert int(jbn.num_batches_tracked.numpy().reshape(())) == int(torch_bns[torch.float32].num_batches_tracked) == 8

    jbn.eval()
    tbn = torch_bns[torch.float32].eval()
    x2 = rng.normal(0, 2, (2, c, 3, 4)).astype(np.float32)
    # eval: per-element affine map, float32 rounding only: measured max 1.4e-6 on values up to ~10.
    np.testing.assert_allclose(jbn(_jt(x2)).numpy(), tbn(_t(x2)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_batchnorm2d_batch_statistics_are_as_accurate_as_torch_at_realistic_sizes():
    rng = np.random.default_rng(4)
    x = (100.0 + rng.normal(0, 1, (4, 2, 160, 160))).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    torch_err = np.abs(torch.nn.BatchNorm2d(2)(_t(x)).detach().numpy() - exact).max()
    jt_err = np.abs(compat.BatchNorm2d(2)(_jt(x)).numpy() - exact).max()
    # measured: torch 5.4e-6, this shim 3.8e-6; float32 sums over the 1e5 elements gave 5.3e-4
    assert torch_err < 1e-5
    assert jt_err < 1e-5


def test_batchnorm2d_and_layernorm_are_exact_in_float64():
    """Jittor's mean() backward and Python-float constants are float32 even on float64
    Vars; the shims avoid both, so a float64 model can be compared with torch's tightly."""
    rng = np.random.default_rng(5)
    x = rng.normal(3, 2, (2, 3, 5, 7))  # 70 values per channel: 1/70 is inexact in float32
    w = rng.normal(0, 1, x.shape)
    tbn = torch.nn.BatchNorm2d(3).double().train()
    tx = torch.tensor(x, requires_grad=True)
    (tbn(tx) * torch.tensor(w)).sum().backward()
    jbn = compat.BatchNorm2d(3)
    jbn.float64()
    jx = jt.array(x, dtype="float64")
    j_gx = jt.grad((jbn(jx) * jt.array(w, dtype="float64")).sum(), jx)
    # float64 rounding only (a float32 constant anywhere shows as ~1e-9): measured max 7e-14
    np.testing.assert_allclose(j_gx.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jbn.running_var.numpy(), tbn.running_var.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jbn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-12, atol=1e-12)

    y = rng.normal(1, 2, (4, 12))
    v = rng.normal(0, 1, y.shape)
    tln = torch.nn.LayerNorm(12).double()
    ty = torch.tensor(y, requires_grad=True)
    (tln(ty) * torch.tensor(v)).sum().backward()
    jln = compat.LayerNorm(12)
    jln.float64()
    jy = jt.array(y, dtype="float64")
    j_gy = jt.grad((jln(jy) * jt.array(v, dtype="float64")).sum(), jy)
    np.testing.assert_allclose(j_gy.numpy(), ty.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_batchnorm2d_buffers_are_not_trained_and_state_dict_keys_match_torch():
    jbn = compat.BatchNorm2d(4)
    assert list(jbn.state_dict()) == list(torch.nn.BatchNorm2d(4).state_dict())
    trainable = [n for n, _ in compat.trainable_named_parameters(jbn)]
    assert trainable == ["weight", "bias"]
    jbn.eval()
    jbn.train()
    jbn(_jt(np.random.default_rng(0).normal(0, 1, (2, 4, 3, 3)).astype(np.float32)))
    assert [n for n, _ in compat.trainable_named_parameters(jbn)] == ["weight", "bias"]
    assert jbn.running_mean.is_stop_grad() and jbn.running_var.is_stop_grad()


# ---------------------------------------------------------------- LayerNorm

@settings(max_examples=6, deadline=None)
@given(st.sampled_from([0.0, 100.0, 1e4]), st.sampled_from([16, 256]), st.integers(0, 2**16))
def test_layernorm_matches_torch_with_large_mean_inputs(mean, d, seed):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 1.5, d).astype(np.float32)
    bias = rng.normal(0, 0.5, d).astype(np.float32)
    x = (mean + rng.normal(0, 1, (3, 4, d))).astype(np.float32)
    w = rng.normal(0, 1, x.shape).astype(np.float32)

    results = {}
    for dtype in (torch.float32, torch.float64):
        tln = torch.nn.LayerNorm(d).to(dtype)
        tln.load_state_dict({"weight": torch.tensor(weight), "bias": torch.tensor(bias)})
        tx = torch.tensor(x, dtype=dtype, requires_grad=True)
        out = tln(tx)
        (out * torch.tensor(w, dtype=dtype)).sum().backward()
        results[dtype] = [a.detach().numpy() for a in (out, tx.grad, tln.weight.grad)]

    jln = compat.LayerNorm(d)
    compat.load_state_dict_checked(jln, {"weight": weight, "bias": bias})
    jx = _jt(x)
    j_out = jln(jx)
    j_results = [j_out.numpy()] + [g.numpy() for g in jt.grad((j_out * _jt(w)).sum(), [jx, jln.weight])]

    for name, jv, tv, ev in zip(["output", "d_input", "d_weight"], j_results,
                                results[torch.float32], results[torch.float64]):
        # floor: float32 rounding of the compared values, measured max 1e-6 at mean 0
        _assert_as_accurate_as_torch(name, jv, tv, ev, floor=2e-6)
    if mean == 0.0:
        # directly against torch: float32 rounding, measured max 9.5e-7 on values ~4
        np.testing.assert_allclose(j_results[0], results[torch.float32][0], rtol=1e-6, atol=2e-6)


# ---------------------------------------------------------------- MultiheadAttention

def _mha_pair(e, h, rng):
    tm = torch.nn.MultiheadAttention(e, h, batch_first=True)
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(torch.tensor(rng.normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    jm = compat.MultiheadAttention(e, h, batch_first=True)
    compat.load_state_dict_checked(jm, {k: v.numpy() for k, v in tm.state_dict().items()})
    return tm, jm


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("mask_kind", ["none", "bool2d", "float2d", "bool3d", "float3d"])
@pytest.mark.parametrize("use_padding", [False, True])
def test_multihead_attention_matches_torch_with_masks(mask_kind, use_padding):
    rng = np.random.default_rng(3)
    b, l, s, e, h = 2, 5, 7, 16, 4
    tm, jm = _mha_pair(e, h, rng)
    q = rng.normal(0, 1, (b, l, e)).astype(np.float32)
    k = rng.normal(0, 1, (b, s, e)).astype(np.float32)
    v = rng.normal(0, 1, (b, s, e)).astype(np.float32)
    w = rng.normal(0, 1, (b, l, e)).astype(np.float32)

    mask = None
    if mask_kind != "none":
        shape = (l, s) if mask_kind.endswith("2d") else (b * h, l, s)
        blocked = rng.random(shape) < 0.4
        blocked[..., 0] = False  # every query keeps one key (a fully masked row is NaN in both)
        mask = blocked if mask_kind.startswith("bool") else np.where(
            blocked, -1e4, rng.normal(0, 1, shape)).astype(np.float32)
    pad = None
    if use_padding:
        pad = np.zeros((b, s), bool)
        pad[1, -3:] = True

    tq, tk, tv = (_t(a, grad=True) for a in (q, k, v))
    t_out, _ = tm(tq, tk, tv, attn_mask=None if mask is None else _t(mask),
                  key_padding_mask=None if pad is None else _t(pad), need_weights=False)
    (t_out * _t(w)).sum().backward()

    jq, jk, jv = _jt(q), _jt(k), _jt(v)
    j_out, _ = jm(jq, jk, jv, attn_mask=None if mask is None else _jt(mask),
                  key_padding_mask=None if pad is None else _jt(pad))
    grads = jt.grad((j_out * _jt(w)).sum(), [jq, jk, jv, jm.in_proj_weight, jm.out_proj.weight])

    # float32 matmuls with K=16 and a 7-way softmax: measured max 7e-7 on values ~3.
    np.testing.assert_allclose(j_out.numpy(), t_out.detach().numpy(), rtol=1e-6, atol=2e-6)
    torch_grads = [tq.grad, tk.grad, tv.grad, tm.in_proj_weight.grad, tm.out_proj.weight.grad]
    for jg, tg in zip(grads, torch_grads):
        # gradient sums over <= 2*7 rows: measured max 2.6e-6 on values ~13.
        np.testing.assert_allclose(jg.numpy(), tg.numpy(), rtol=1e-5, atol=1e-5)


def test_multihead_attention_state_dict_keys_and_shapes_match_torch():
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    jm = compat.MultiheadAttention(8, 2, batch_first=True)
    assert {k: tuple(v.shape) for k, v in jm.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tm.state_dict().items()}


# ---------------------------------------------------------------- AvgPool2d

@pytest.mark.parametrize("ceil_mode", [True, False])
def test_avg_pool2d_matches_torch_for_every_small_size_including_kernel_sized_maps(ceil_mode):
    rng = np.random.default_rng(6)
    for h in range(1 if ceil_mode else 2, 8):
        for w in range(1 if ceil_mode else 2, 8):
            x = rng.normal(0, 1, (2, 3, h, w)).astype(np.float32)
            tx = _t(x, grad=True)
            t_out = torch.nn.AvgPool2d(2, 2, 0, ceil_mode=ceil_mode)(tx)
            g = rng.normal(0, 1, tuple(t_out.shape)).astype(np.float32)
            (t_out * _t(g)).sum().backward()
            jx = _jt(x)
            j_out = compat.AvgPool2d(2, 2, 0, ceil_mode=ceil_mode)(jx)
            assert tuple(j_out.shape) == tuple(t_out.shape), (h, w)
            # mean of <= 4 values: measured max 2.4e-7 (one ulp of values ~2)
            np.testing.assert_allclose(j_out.numpy(), t_out.detach().numpy(), rtol=1e-6, atol=5e-7)
            np.testing.assert_allclose(jt.grad((j_out * _jt(g)).sum(), jx).numpy(), tx.grad.numpy(),
                                       rtol=1e-6, atol=5e-7)


# ---------------------------------------------------------------- detach

def test_detach_is_out_of_place_and_keeps_the_original_differentiable():
    x = _jt(np.array([1.0, -2.0, 3.0], np.float32))
    d = compat.detach(x)
    assert d is not x
    assert not x.is_stop_grad()
    np.testing.assert_array_equal(jt.grad((d * d).sum(), x).numpy(), [0.0, 0.0, 0.0])
    # d/dx [x^2 + stopgrad(x) * x] = 2x + x
    g = jt.grad((x * x + d * x).sum(), x)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy())


# ---------------------------------------------------------------- make_buffer / freeze

class _Toy(jnn.Module):
    def __init__(self):
        self.lin = jnn.Linear(3, 2)
        self.head = jnn.Linear(2, 1)
        self.scale = compat.make_buffer(np.array([2.0, 3.0], np.float32))

    def execute(self, x):
        return self.head(self.lin(x) * self.scale)


def _sgd_step(module, x):
    opt = jt.optim.SGD(module.parameters(), lr=0.5)
    opt.step((module(x) ** 2).sum())


def test_make_buffer_is_in_the_state_dict_but_never_trained():
    m = _Toy()
    assert "scale" in m.state_dict()
    x = _jt(np.ones((4, 3), np.float32))
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    for mode in ("train", "eval", "train"):
        getattr(m, mode)()
        _sgd_step(m, x)
    after = {k: v.numpy() for k, v in m.state_dict().items()}
    np.testing.assert_array_equal(after["scale"], before["scale"])
    assert not np.array_equal(after["lin.weight"], before["lin.weight"])
    assert m.scale.is_stop_grad()
    np.testing.assert_array_equal(jt.grad(m(x).sum(), m.scale).numpy(), [0.0, 0.0])


def test_make_buffer_keeps_int64_values_and_explicit_dtypes():
    big = np.array([2**40 + 3, -(2**33)], np.int64)
    buf = compat.make_buffer(big)
    assert buf.dtype == jt.int64
    np.testing.assert_array_equal(buf.numpy(), big)
    assert compat.make_buffer(np.ones(2), dtype=np.float64).dtype == jt.float64
    assert compat.make_buffer(np.ones(2, np.float32)).dtype == jt.float32


def test_make_buffer_from_a_live_var_leaves_that_var_trainable():
    p = jt.ones(3)
    buf = compat.make_buffer(p)
    assert buf.is_stop_grad() and not p.is_stop_grad()


def test_freeze_before_eval_survives_eval_train_cycles():
    m = _Toy()
    compat.freeze(m.lin)
    x = _jt(np.ones((4, 3), np.float32))
    for mode in ("eval", "train", "eval", "train"):
        getattr(m, mode)()
    grads = jt.grad(m(x).sum(), [m.lin.weight, m.lin.bias, m.head.weight, m.head.bias])
    assert all(not g.numpy().any() for g in grads[:2])
    assert all(g.numpy().any() for g in grads[2:])
    assert [n for n, _ in compat.trainable_named_parameters(m)] == ["head.weight", "head.bias"]


# ---------------------------------------------------------------- load_state_dict_checked

def _toy_state(m, **changes):
    state = {k: v.numpy() + 1.0 for k, v in m.state_dict().items()}
    state.update(changes)
    return state


def test_load_state_dict_checked_loads_values_and_keeps_buffers_frozen():
    m = _Toy()
    state = _toy_state(m)
    problems = compat.load_state_dict_checked(m, state)
    assert problems == {"missing": [], "unexpected": [], "mismatched": []}
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    assert m.scale.is_stop_grad() and not m.lin.weight.is_stop_grad()


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mismatched"])
def test_load_state_dict_checked_raises_and_loads_nothing(problem):
    m = _Toy()
    original = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    state = _toy_state(m)
    if problem == "missing":
        del state["head.bias"]
    elif problem == "unexpected":
        state["head.extra"] = np.zeros(1, np.float32)
    else:
        state["lin.weight"] = np.zeros((3, 2), np.float32)
    with pytest.raises(compat.StateDictError, match=problem if problem != "mismatched" else "mis-shaped"):
        compat.load_state_dict_checked(m, state)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), original[k])


def test_load_state_dict_checked_non_strict_reports_and_loads_the_rest():
    m = _Toy()
    state = _toy_state(m, **{"lin.weight": np.zeros((3, 2), np.float32), "extra": np.zeros(1)})
    del state["head.bias"]
    problems = compat.load_state_dict_checked(m, state, strict=False)
    assert problems["missing"] == ["head.bias"]
    assert problems["unexpected"] == ["extra"]
    assert [p[0] for p in problems["mismatched"]] == ["lin.weight"]
    np.testing.assert_array_equal(m.head.weight.numpy(), state["head.weight"])


def test_load_state_dict_checked_accepts_torch_scalar_num_batches_tracked():
    bn = compat.BatchNorm2d(3)
    state = {k: v.numpy() for k, v in torch.nn.BatchNorm2d(3).state_dict().items()}
    state["num_batches_tracked"] = np.array(41, np.int64)
    compat.load_state_dict_checked(bn, state)
    assert bn.num_batches_tracked.dtype == jt.int64
    assert int(bn.num_batches_tracked.numpy().reshape(())) == 41
    state["num_batches_tracked"] = np.array(2**40 + 1, np.int64)
    compat.load_state_dict_checked(bn, state)
    assert int(bn.num_batches_tracked.numpy().reshape(())) == 2**40 + 1
    assert math.isclose(float(bn.running_var.numpy()[0]), 1.0)


# ---------------------------------------------------------------- kernel switches

def _values_and_grads(fn, inputs, w):
    out = fn(*inputs)
    return [out.numpy()] + [g.numpy() for g in jt.grad((out * w).sum(), inputs)]


@pytest.mark.parametrize("switch", ["BN", "LN", "MSDA", "SILU"])
def test_kernel_switch_runs_the_composed_ops_with_the_same_values(switch, monkeypatch):
    """``RTDETR_JITTOR_<switch>=ops`` replaces the C++ kernel by the composed Jittor ops
    (the kernel is not called) and both compute the same values and gradients."""
    from rtdetr_jittor.rtdetr import utils
    from rtdetr_jittor.compat import modules
    rng = np.random.default_rng(9)
    f64 = lambda a: jt.array(np.asarray(a, np.float64), dtype="float64")  # noqa: E731
    if switch == "BN":
        bn = compat.BatchNorm2d(3)
        bn.float64()
        inputs, kernel = [f64(rng.normal(1, 2, (2, 3, 4, 5)))], (modules, "batch_norm_train")
        fn = bn
    elif switch == "LN":
        ln = compat.LayerNorm(6)
        ln.float64()
        inputs, kernel = [f64(rng.normal(1, 2, (2, 4, 6)))], (modules, "layer_norm")
        fn = ln
    elif switch == "SILU":
        inputs, kernel = [f64(rng.normal(0, 3, (2, 3, 4, 5)))], (modules, "silu")
        fn = compat.SiLU()
    else:
        shapes = [[4, 3], [2, 2]]
        inputs = [f64(rng.normal(size=(2, 16, 2, 3))), f64(rng.uniform(-0.1, 1.1, (2, 5, 2, 2, 3, 2))),
                  f64(rng.uniform(0, 1, (2, 5, 2, 2, 3)))]
        kernel = (utils, "deformable_attention")
        fn = lambda v, loc, att: utils.deformable_attention_core_func(v, shapes, loc, att)  # noqa: E731
    calls = []
    real = getattr(*kernel)
    monkeypatch.setattr(*kernel, lambda *a, **k: calls.append(1) or real(*a, **k))
    probe = fn(*inputs)
    assert calls, "the kernel did not run by default"
    w = f64(rng.normal(size=tuple(probe.shape)))
    with_kernel = _values_and_grads(fn, inputs, w)
    monkeypatch.setenv(f"RTDETR_JITTOR_{switch}", "ops")
    monkeypatch.setattr(*kernel, lambda *a, **k: pytest.fail("the kernel ran although switched off"))
    composed = _values_and_grads(fn, inputs, w)
    for a, b in zip(with_kernel, composed):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _conv_and_torch(conv, x, g, input_grad=True):
    """Output and gradients (input, weight, bias) of a compat.Conv2d through ``sum(y * g)``
    and of torch's Conv2d with the same parameters, as pairs of NumPy arrays."""
    ref = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(conv.weight.numpy()))
        if conv.bias is not None:
            ref.bias.copy_(torch.from_numpy(conv.bias.numpy()))
    jx = jt.array(x) if input_grad else jt.array(x).stop_grad()
    y = conv(jx)
    params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    grads = jt.grad((y * jt.array(g)).sum(), ([jx] if input_grad else []) + params)
    tx = torch.tensor(x, requires_grad=input_grad)
    ty = ref(tx)
    (ty * torch.from_numpy(g)).sum().backward()
    theirs = ([tx.grad] if input_grad else []) + [ref.weight.grad] + ([ref.bias.grad] if conv.bias is not None else [])
    return [(y.numpy(), ty.detach().numpy())] + [(a.numpy(), b.numpy()) for a, b in zip(grads, theirs)]


@settings(max_examples=12)
@given(batch=st.integers(1, 3), channels=st.sampled_from([(3, 5), (16, 8), (32, 64), (512, 128)]),
       kernel=st.sampled_from([1, 3, 5, 7]), stride=st.sampled_from([1, 2]), padding=st.integers(0, 3),
       dilation=st.sampled_from([1, 2]), size=st.sampled_from([(9, 9), (13, 7), (20, 12)]), bias=st.booleans(),
       input_grad=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d_kernel_matches_torch_value_and_gradients(batch, channels, kernel, stride, padding, dilation, size,
                                                         bias, input_grad, seed):
    """compat.Conv2d's float32 kernel (oneDNN as torch sets it up) against torch's
    convolution: output, input gradient (or none for an input without gradient, as the
    image), weight and bias gradients. Measured on this CPU over 60 random geometries of
    this strategy: output and oneDNN gradients bit-identical to torch's in 109 of 139
    tensors, worst 4.4e-7 of scale (output; input gradient 4.7e-7, weight 1.9e-7) where
    torch's oneDNN picked another implementation; the bias gradient is Jittor's own sum
    (8.5e-7). 2e-6 of scale leaves room for a CPU where the two oneDNN versions choose
    differently and stays far below a wrong stride, padding or transposition (order 1)."""
    rng = np.random.default_rng(seed)
    c_in, c_out = channels
    x = rng.standard_normal((batch, c_in) + size).astype(np.float32)
    conv = compat.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=bias)
    out = ((size[0] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1,
           (size[1] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1)
    if min(out) < 1:
        return
    g = rng.standard_normal((batch, c_out) + out).astype(np.float32)
    for mine, theirs in _conv_and_torch(conv, x, g, input_grad):
        assert mine.shape == theirs.shape
        scale = max(float(np.abs(theirs).max()), 1e-30)
        assert float(np.abs(mine - theirs).max()) / scale < 2e-6


@settings(max_examples=6)
@given(batch=st.integers(1, 3), channels=st.sampled_from([(3, 5), (64, 32), (512, 128)]),
       size=st.sampled_from([(1, 1), (5, 7), (20, 12)]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_pointwise_conv2d_without_gradient_as_a_product_matches_torch(batch, channels, size, bias, seed):
    """Without gradients (eval), compat.Conv2d runs float32 pointwise convolutions as one
    matrix product per image. The product sums the input channels in another order than
    a convolution kernel: measured worst 6.9e-7 of the output scale over 36 cases up to
    512 channels, so 2e-6 leaves room and stays far below a wrong index or transposition
    (order 1)."""
    rng = np.random.default_rng(seed)
    c_in, c_out = channels
    x = rng.standard_normal((batch, c_in) + size).astype(np.float32)
    conv = compat.Conv2d(c_in, c_out, 1, bias=bias)
    with jt.no_grad():
        y = conv(jt.array(x)).numpy()
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(conv.weight.numpy()),
                                     torch.from_numpy(conv.bias.numpy()) if bias else None).numpy()
    assert y.shape == ref.shape
    assert float(np.abs(y - ref).max()) / max(float(np.abs(ref).max()), 1e-30) < 2e-6


def test_conv2d_keeps_jittors_convolution_for_float64_groups_and_the_switch(monkeypatch):
    """Float64 and grouped convolutions, and any with ``RTDETR_JITTOR_CONV=ops``, run
    Jittor's own convolution (bit-identical to it), and the kernel is not called."""
    from rtdetr_jittor.compat import modules
    monkeypatch.setattr(modules, "conv2d", lambda *a, **k: pytest.fail("the kernel ran"))
    rng = np.random.default_rng(0)
    x64 = jt.array(rng.standard_normal((2, 4, 6, 5)), dtype="float64")
    x32 = jt.array(rng.standard_normal((2, 4, 6, 5)).astype(np.float32))
    for conv, x in ((compat.Conv2d(4, 3, 1).float64(), x64), (compat.Conv2d(4, 3, 3, padding=1).float64(), x64),
                    (compat.Conv2d(4, 2, 3, padding=1, groups=2), x32)):
        assert conv.weight.dtype == x.dtype
        assert np.array_equal(conv(x).numpy(), jnn.Conv2d.execute(conv, x).numpy())
    monkeypatch.setenv("RTDETR_JITTOR_CONV", "ops")
    conv = compat.Conv2d(4, 3, 3, stride=2, padding=1)
    assert np.array_equal(conv(x32).numpy(), jnn.Conv2d.execute(conv, x32).numpy())


def _activation_and_torch(module, torch_fn, x, g):
    """Value and input gradient (through ``sum(y * g)``) of a compat activation module and
    of the torch function it stands for, as NumPy arrays: (y, gx, torch y, torch gx)."""
    jx = jt.array(x, dtype=str(x.dtype))
    y = module(jx)
    (gx,) = jt.grad((y * jt.array(g, dtype=str(g.dtype))).sum(), [jx])
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_fn(tx)
    (ty * torch.from_numpy(g)).sum().backward()
    return y.numpy(), gx.numpy(), ty.detach().numpy(), tx.grad.numpy()


@settings(max_examples=8)
@given(shape=st.sampled_from([(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 33, 20)]), dtype=st.sampled_from(["float32", "float64"]),
       zeros=st.booleans(), seed=st.integers(0, 2**16))
def test_relu_kernel_value_and_gradient_match_torch_including_at_zero(shape, dtype, zeros, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if zeros:
        x[rng.random(shape) < 0.3] = 0.0  # torch's gradient at 0 is 0
    g = rng.standard_normal(shape).astype(dtype)
    relu = compat.ReLU()
    relu.train()
    y, gx, ty, tgx = _activation_and_torch(relu, torch.relu, x, g)
    assert np.array_equal(y, ty)
    assert np.array_equal(gx, tgx)
    relu.eval()
    assert np.array_equal(relu(jt.array(x, dtype=dtype)).numpy(), y)  # the fusable eval path gives the same values


@settings(max_examples=12)
@given(size=st.tuples(st.integers(1, 13), st.integers(1, 13)), window=st.sampled_from([(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0)]),
       dtype=st.sampled_from(["float32", "float64"]), ties=st.booleans(), seed=st.integers(0, 2**16))
def test_max_pool2d_kernel_value_and_gradient_match_torch_including_ties(size, window, dtype, ties, seed):
    """Ties (a ReLU's zeros, repeated values) send the gradient to the first maximum in
    scan order in both; sums of gradients landing on one input are exact here (values
    drawn on a grid of halves)."""
    kernel, stride, padding = window
    if size[0] + 2 * padding < kernel or size[1] + 2 * padding < kernel:
        return  # torch refuses an output of size 0
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3) + size)
    if ties:
        x = np.maximum(np.round(x), 0)
    x = x.astype(dtype)
    jx = jt.array(x, dtype=dtype)
    y = compat.max_pool2d(jx, kernel_size=kernel, stride=stride, padding=padding)
    g = (rng.integers(-4, 5, size=y.shape) / 2).astype(dtype)
    (gx,) = jt.grad((y * jt.array(g, dtype=dtype)).sum(), [jx])
    tx = torch.tensor(x, requires_grad=True)
    ty = F.max_pool2d(tx, kernel_size=kernel, stride=stride, padding=padding)
    (ty * torch.from_numpy(g)).sum().backward()
    assert np.array_equal(y.numpy(), ty.detach().numpy())
    assert np.array_equal(gx.numpy(), tx.grad.numpy())


def test_max_pool2d_propagates_nan_like_torch():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = np.nan
    y = compat.max_pool2d(jt.array(x), kernel_size=3, stride=2, padding=1).numpy()
    expected = F.max_pool2d(torch.from_numpy(x), kernel_size=3, stride=2, padding=1).numpy()
    assert np.array_equal(np.isnan(y), np.isnan(expected)) and np.isnan(y).any()


@settings(max_examples=8)
@given(shape=st.sampled_from([(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 33, 20)]), dtype=st.sampled_from(["float32", "float64"]),
       spread=st.sampled_from([1.0, 6.0, 40.0]), seed=st.integers(0, 2**16))
def test_silu_kernel_value_and_gradient_match_torch(shape, dtype, spread, seed):
    """compat.SiLU (``kernels.silu``, torch's formulas) against ``F.silu``. Only the
    rounding of ``exp`` and of the division differs (``-Ofast`` divides through a
    reciprocal estimate). Measured over 3e5 values in [-80, 40]: worst value error 3.5e-7
    relative in float32 (3 ulps), 6.1e-16 in float64 (4 ulps); bound 1e-6 / 2e-15
    relative, plus ``|x| exp(-80)`` (1.805e-35 |x|) below -80 where the kernel caps the exponent. The
    gradient ``g s (1 + x (1 - s))`` loses ``1 - s`` to cancellation for large x in both
    formulas, so each carries up to ``|x g|`` ulps of 1 (9.3e-6 at x ~ 60 in float32):
    bound 1e-6 / 2e-15 of the gradient's scale plus ``2 eps |x g|``. A wrong formula is
    off by order 1e-1."""
    bound = {"float32": 1e-6, "float64": 2e-15}[dtype]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * spread).astype(dtype)
    x.flat[0] = 0.0
    g = rng.standard_normal(shape).astype(dtype)
    y, gx, ty, tgx = _activation_and_torch(compat.SiLU(), F.silu, x, g)
    assert y.dtype == dtype and gx.dtype == dtype
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - ty) <= bound * np.abs(ty) + np.abs(x) * 1.9e-35 + np.finfo(dtype).tiny)
    assert np.all(np.abs(gx - tgx) <= bound * np.abs(tgx).max() + 2 * eps * np.abs(x * g))


def test_silu_kernel_at_extremes():
    """Very negative inputs: torch's ``x / (1 + exp(-x))`` underflows to 0; the kernel
    caps the exponent (``kernels.silu``) and stays within |x| exp(-80) = 1.805e-35 |x| of it, never NaN;
    NaN propagates."""
    x = np.array([-1e4, -800, -100, -89, -88, -80, -30, 0, 30, 100, np.nan], np.float32)
    y = compat.SiLU()(jt.array(x)).numpy()
    expected = F.silu(torch.from_numpy(x)).numpy()
    finite = ~np.isnan(x)
    assert np.all(np.abs(y[finite] - expected[finite]) <= np.abs(x[finite]) * 1.9e-35 + 1e-37)
    assert np.isnan(y[~finite]).all()
    jx = jt.array(x[finite])
    (gx,) = jt.grad(compat.SiLU()(jx).sum(), [jx])
    tx = torch.tensor(x[finite], requires_grad=True)
    F.silu(tx).sum().backward()
    assert np.all(np.abs(gx.numpy() - tx.grad.numpy()) <= np.abs(x[finite]) * 1.9e-35 + 1e-6)


@settings(max_examples=10)
@given(dims=st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
       transpose=st.tuples(st.booleans(), st.booleans()), dtype=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2**16))
def test_bmm_value_and_gradients_match_torch(dims, transpose, dtype, seed):
    """compat.bmm against ``torch.bmm`` with the same transposed operands: values and
    both gradients. Float32 runs oneDNN's sgemm (blocked sums), float64 a plain sum:
    measured worst 3.2e-7 of the scale in float32 over 60 random cases of these shapes,
    5.7e-16 in float64; bounds 2e-6 and 1e-14, far below a wrong transposition (order 1)."""
    n, m, k, p = dims
    ta, tb = transpose
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, k, m) if ta else (n, m, k)).astype(dtype)
    b = rng.standard_normal((n, p, k) if tb else (n, k, p)).astype(dtype)
    g = rng.standard_normal((n, m, p)).astype(dtype)
    ja, jb = jt.array(a, dtype=dtype), jt.array(b, dtype=dtype)
    y = compat.bmm(ja, jb, transpose_a=ta, transpose_b=tb)
    ga, gb = jt.grad((y * jt.array(g, dtype=dtype)).sum(), [ja, jb])
    tA, tB = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ty = torch.bmm(tA.transpose(1, 2) if ta else tA, tB.transpose(1, 2) if tb else tB)
    (ty * torch.from_numpy(g)).sum().backward()
    bound = {"float32": 2e-6, "float64": 1e-14}[dtype]
    for mine, theirs in ((y, ty), (ga, tA.grad), (gb, tB.grad)):
        theirs = theirs.detach().numpy()
        assert mine.shape == theirs.shape and mine.dtype == dtype
        assert np.abs(mine.numpy() - theirs).max() <= bound * max(np.abs(theirs).max(), 1e-30)
