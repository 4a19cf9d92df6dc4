"""Twin parity of the HybridEncoder: official state_dict names/shapes and trainable
parameter counts on the Jittor side, initialisation, the position embedding, outputs
and gradients (inputs and every trainable parameter) in eval and training mode at
backbone-like feature-map sizes, BatchNorm running statistics after a training step,
the cached-embedding path, and the RepVGG deploy form."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import example, given, settings, strategies as st

from rtdetr_jittor._env import jt
from rtdetr_jittor import compat
from rtdetr_common import probes
from rtdetr_common.config import load_config
from rtdetr_common.instantiate import instantiate
from reference_pytorch.rtdetr import hybrid_encoder as ref
from rtdetr_jittor.rtdetr import hybrid_encoder as twin

pytestmark = pytest.mark.parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRIDES = (8, 16, 32)

# Tolerances: max |jittor - torch| / max(1, max |torch|), float32 on CPU, measured over
# the hypothesis cases below with random weights and BN statistics of realistic scale.
# Eval: conv/LayerNorm/attention chains, outputs O(1): measured 1.4e-6 (gradients 1.0e-6).
EVAL_REL = 5e-6
# Training: BatchNorm on batch statistics; outputs measured 1.3e-5, parameter gradients
# 5.6e-5 (relative to max(1, max |grad|)) when the stride-32 map has >= 6 values per channel.
TRAIN_OUT_REL, TRAIN_GRAD_REL = 1e-4, 2e-4
# With only 4 values per channel there (64 px image, batch 1) the normalisation is
# ill-conditioned: outputs measured 1.0e-4, gradients 4.6e-4.
FEW_OUT_REL, FEW_GRAD_REL = 3e-4, 1.5e-3


def official_encoder_entries(name):
    rows = []
    with open(os.path.join(ROOT, "fixtures", "official", f"rtdetr_{name}_state_dict.tsv")) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            if key.startswith("encoder."):
                rows.append((key[len("encoder."):], shape))
    return rows


def build(module, name, **overrides):
    cfg = load_config(os.path.join(ROOT, "configs", "rtdetr", f"rtdetr_{name}_6x_coco.yml"),
                      {"HybridEncoder": overrides} if overrides else None)
    return instantiate(cfg, {"HybridEncoder": module.HybridEncoder}, "HybridEncoder")


def randomise_(model, seed):
    """Weights, BN/LN affine parameters and BN statistics at a realistic random scale
    (fresh BN statistics are the identity and fresh attention biases are zero)."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(randn(m.weight.shape) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias.shape))
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.2 * randn(m.weight.shape))
                m.bias.copy_(0.1 * randn(m.bias.shape))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.2 * randn(m.running_mean.shape))
                    m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.MultiheadAttention):
                m.in_proj_weight.copy_(randn(m.in_proj_weight.shape) / math.sqrt(m.embed_dim))
                m.in_proj_bias.copy_(0.1 * randn(m.in_proj_bias.shape))
    return model


def load_from(t, j):
    compat.load_state_dict_checked(j, {k: v.detach().numpy() for k, v in t.state_dict().items()})
    return j


def twins(name, seed, **overrides):
    t = randomise_(build(ref, name, **overrides), seed)
    return t, load_from(t, build(twin, name, **overrides))


def feats_np(rng, batch, height, width, channels):
    return [rng.standard_normal((batch, c, height // s, width // s)).astype(np.float32)
            for c, s in zip(channels, STRIDES)]


def rel_err(got, want):
    return float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("name,count", [("r18vd", 4_965_120), ("r50vd", 11_950_848)])
def test_jittor_state_dict_matches_official(name, count):
    m = build(twin, name)
    # Jittor has no 0-d tensors: num_batches_tracked is stored with shape (1,), torch's ()
    got = [(k, "()" if k.endswith("num_batches_tracked") and tuple(v.shape) == (1,) else str(tuple(v.shape)))
           for k, v in m.state_dict().items()]
    assert got == official_encoder_entries(name)
    assert sum(p.numel() for _, p in compat.trainable_named_parameters(m)) == count
    assert tuple(m._pos_embed2.shape) == (1, 400, 256) and m._pos_embed2.is_stop_grad()


def test_jittor_initialisation_follows_reference():
    torch.manual_seed(0)
    sd_t = {k: v.numpy() for k, v in build(ref, "r18vd").state_dict().items()}
    sd_j = {k: v.numpy() for k, v in build(twin, "r18vd").state_dict().items()}
    checked = 0
    for k, t in sd_t.items():
        j = sd_j[k].reshape(t.shape)
        if np.all(t == t.flat[0]):
            # constants: BN/LN ones and zeros, zero attention biases, BN statistics
            np.testing.assert_array_equal(j, t, err_msg=k)
        elif t.size >= 1000:
            # same uniform distributions: sample std within 15% (>= 1000 draws: ~3% noise)
            assert 0.85 < j.std() / t.std() < 1.15, (k, j.std(), t.std())
            assert abs(j.mean()) < 0.2 * t.std() + 1e-8, (k, j.mean())
            checked += 1
    assert checked > 40  # every conv/linear weight of r18vd's encoder (48)


@pytest.mark.parametrize("w,h", [(20, 20), (25, 25), (20, 15), (2, 3)])
def test_position_embedding_parity(w, h):
    got = twin.HybridEncoder.build_2d_sincos_position_embedding(w, h, 256, 10000).numpy()
    want = ref.HybridEncoder.build_2d_sincos_position_embedding(w, h, 256, 10000).numpy()
    assert got.shape == want.shape
    # pow/sin/cos ulps on arguments up to 24 (800 px): measured 1.4e-6
    np.testing.assert_allclose(got, want, atol=3e-6, rtol=0)


def run_pair(t, j, xs, train, seed):
    """Forward both, backprop the same random cotangent; returns outputs, probes, grads."""
    t.train(train)
    if train:
        j.train()
    else:
        j.eval()
    rng = np.random.default_rng(seed)
    tx = [torch.tensor(x, requires_grad=True) for x in xs]
    jx = [jt.array(x) for x in xs]
    with probes.recording() as rec_t:
        out_t = t(tx)
    with probes.recording() as rec_j:
        out_j = j(jx)
    cot = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in out_t]
    loss_t = sum((o * torch.tensor(c)).sum() for o, c in zip(out_t, cot))
    loss_j = sum((o * jt.array(c)).sum() for o, c in zip(out_j, cot))
    names = [n for n, _ in t.named_parameters()] if train else []
    params_t = dict(t.named_parameters())
    params_j = dict(compat.trainable_named_parameters(j)) if train else {}
    assert set(params_j) == set(names)
    grads_t = torch.autograd.grad(loss_t, tx + [params_t[n] for n in names])
    grads_j = jt.grad(loss_j, jx + [params_j[n] for n in names])
    labels = [f"d/dfeat{i}" for i in range(len(xs))] + names
    grads = [(n, a.numpy(), b.numpy()) for n, a, b in zip(labels, grads_t, grads_j)]
    return out_t, out_j, rec_t, rec_j, grads


@settings(max_examples=6)
@example(name="r50vd", batch=1, height=64, width=64, train=True, seed=3)
@example(name="r18vd", batch=2, height=96, width=128, train=True, seed=4)
@example(name="r50vd", batch=2, height=64, width=64, train=False, seed=6)
@given(name=st.sampled_from(["r18vd", "r50vd"]), batch=st.integers(1, 2),
       height=st.sampled_from([64, 96]), width=st.sampled_from([64, 96, 128]),
       train=st.booleans(), seed=st.integers(0, 1000))
def test_encoder_parity(name, batch, height, width, train, seed):
    t, j = twins(name, seed, eval_spatial_size=[64, 64])
    xs = feats_np(np.random.default_rng(seed), batch, height, width, t.in_channels)
    out_t, out_j, rec_t, rec_j, grads = run_pair(t, j, xs, train, seed + 1)

    few = batch * (height // 32) * (width // 32) < 6
    out_tol, grad_tol = ((FEW_OUT_REL, FEW_GRAD_REL) if few else (TRAIN_OUT_REL, TRAIN_GRAD_REL)) if train \
        else (EVAL_REL, EVAL_REL)
    assert len(out_j) == 3
    for level, (a, b) in enumerate(zip(out_t, out_j)):
        assert tuple(b.shape) == (batch, 256, height // STRIDES[level], width // STRIDES[level])
        err = rel_err(b.numpy(), a.detach().numpy())
        assert err < out_tol, f"level {level}: relative error {err:.2e}"
    for label, a, b in grads:
        assert a.shape == b.shape, label
        err = rel_err(b, a)
        assert err < grad_tol, f"{label}: relative gradient error {err:.2e} (max |grad| {np.abs(a).max():.2e})"

    assert [n for n, _ in rec_j] == [n for n, _ in rec_t] == ["encoder.pos_embed"]
    uses_cache = not train and (height, width) == (64, 64)
    assert (rec_j[0][1] is j._pos_embed2) == uses_cache
    assert (rec_t[0][1] is t.pos_embed2) == uses_cache
    # pow/sin/cos ulps, arguments below 4: measured 1.8e-7
    np.testing.assert_allclose(rec_j[0][1].numpy(), rec_t[0][1].numpy(), atol=5e-7, rtol=0)

    if train:
        sd_j = j.state_dict()
        for k, v in t.state_dict().items():
            if k.endswith(("running_mean", "running_var")):
                # one momentum-0.1 update from batch statistics: measured 9.7e-6 (values up to 2.2)
                np.testing.assert_allclose(sd_j[k].numpy(), v.numpy(), atol=2e-5, rtol=1e-5, err_msg=k)
            elif k.endswith("num_batches_tracked"):
                assert int(sd_j[k].numpy().reshape(())) == int(v) == 1, k


@pytest.mark.parametrize("channels,act", [(16, "silu"), (64, "relu")])
def test_repvgg_deploy_parity(channels, act):
    t = randomise_(ref.RepVggBlock(channels, channels, act=act), 3).eval()
    j = load_from(t, twin.RepVggBlock(channels, channels, act=act))
    j.eval()
    x = np.random.default_rng(4).standard_normal((2, channels, 9, 7)).astype(np.float32)
    two_branch = j(jt.array(x)).numpy()
    t.convert_to_deploy()
    j.convert_to_deploy()
    assert list(j.state_dict()) == list(t.state_dict())
    assert list(j.state_dict())[-2:] == ["conv.weight", "conv.bias"]
    # BN folding is a few float32 multiplies per weight: measured 1.2e-7 (weights up to 0.74)
    np.testing.assert_allclose(j.conv.weight.numpy(), t.conv.weight.detach().numpy(), atol=5e-7, rtol=1e-6)
    np.testing.assert_allclose(j.conv.bias.numpy(), t.conv.bias.detach().numpy(), atol=5e-7, rtol=1e-6)
    with torch.no_grad():
        fused_t = t(torch.tensor(x)).numpy()
    fused_j = j(jt.array(x)).numpy()
    # fused vs two-branch and Jittor vs torch conv, outputs up to 7: measured 8.4e-7 and 1.0e-6
    assert rel_err(fused_j, two_branch) < 4e-6
    assert rel_err(fused_j, fused_t) < 4e-6


def test_encoder_deploy_parity():
    t, j = twins("r18vd", 5, eval_spatial_size=[64, 64])
    t.eval()
    j.eval()
    xs = feats_np(np.random.default_rng(6), 2, 64, 64, t.in_channels)
    before = [o.numpy() for o in j([jt.array(x) for x in xs])]
    for model in (t, j):
        blocks = [m for m in model.modules() if hasattr(m, "convert_to_deploy")]
        assert len(blocks) == 12
        for m in blocks:
            m.convert_to_deploy()
    assert list(j.state_dict()) == list(t.state_dict())
    with torch.no_grad():
        out_t = t([torch.tensor(x) for x in xs])
    out_j = j([jt.array(x) for x in xs])
    for a, b, c in zip(out_t, out_j, before):
        # measured 7.2e-7 relative (fused vs branches and Jittor vs torch)
        assert rel_err(b.numpy(), a.numpy()) < EVAL_REL
        assert rel_err(b.numpy(), c) < EVAL_REL
