"""Reference HybridEncoder against the official layout and semantics: state_dict keys
and shapes from the official tsv files, parameter counts, the 2D sin-cos position
embedding, the cached-embedding path (and its size-agnostic extension), the AIFI layer
and CCFM wiring restated independently, RepVGG re-parameterisation, and batch-1
gradients (a torch 2.13 CPU BatchNorm bug that the encoder works around)."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtdetr_common import probes
from rtdetr_common.config import load_config
from rtdetr_common.instantiate import instantiate
from reference_pytorch.rtdetr.hybrid_encoder import HybridEncoder, RepVggBlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = dict(in_channels=[16, 32, 64], hidden_dim=32, nhead=4, dim_feedforward=64, expansion=0.5)


def official_encoder_entries(name):
    rows = []
    with open(os.path.join(ROOT, "fixtures", "official", f"rtdetr_{name}_state_dict.tsv")) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            if key.startswith("encoder."):
                rows.append((key[len("encoder."):], shape))
    return rows


def build_from_config(name, **overrides):
    cfg = load_config(os.path.join(ROOT, "configs", "rtdetr", f"rtdetr_{name}_6x_coco.yml"),
                      {"HybridEncoder": overrides} if overrides else None)
    return instantiate(cfg, {"HybridEncoder": HybridEncoder}, "HybridEncoder")


def randomise_bn_(model, seed):
    """BatchNorm statistics and affine parameters away from their identity defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
    return model


def small_pair(seed=0, **kw):
    """Two encoders with the same weights: one with eval_spatial_size [64, 64], one without."""
    torch.manual_seed(seed)
    cached = randomise_bn_(HybridEncoder(eval_spatial_size=[64, 64], **SMALL, **kw), seed)
    plain = HybridEncoder(eval_spatial_size=None, **SMALL, **kw)
    plain.load_state_dict(cached.state_dict(), strict=True)
    return cached.eval(), plain.eval()


def feats(batch, height, width, channels=SMALL["in_channels"], seed=0):
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal((batch, c, height // s, width // s)), dtype=torch.float32)
            for c, s in zip(channels, (8, 16, 32))]


@pytest.mark.parametrize("name", ["r18vd", "r50vd"])
def test_state_dict_matches_official(name):
    model = build_from_config(name)
    got = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    assert got == official_encoder_entries(name)
    assert "pos_embed2" not in model.state_dict() and tuple(model.pos_embed2.shape) == (1, 400, 256)


@pytest.mark.parametrize("name,count", [("r18vd", 4_965_120), ("r50vd", 11_950_848)])
def test_parameter_count_matches_official(name, count):
    assert sum(p.numel() for p in build_from_config(name).parameters()) == count


@pytest.mark.parametrize("w,h,dim", [(3, 2, 16), (4, 4, 8), (2, 5, 32)])
def test_position_embedding_formula(w, h, dim):
    got = HybridEncoder.build_2d_sincos_position_embedding(w, h, dim, 10000.).numpy()
    quarter = dim // 4
    omega = 10000.0 ** (-np.arange(quarter) / quarter)
    want = np.zeros((1, w * h, dim))
    for i in range(w):
        for j in range(h):
            k = i * h + j  # 'ij' meshgrid over (w, h): the w index is outermost
            want[0, k] = np.concatenate([np.sin(i * omega), np.cos(i * omega), np.sin(j * omega), np.cos(j * omega)])
    # float32 sin/cos of arguments below 5 against float64: measured 4.8e-8
    np.testing.assert_allclose(got, want, atol=3e-7, rtol=0)


def test_eval_at_eval_spatial_size_uses_cached_embedding():
    cached, plain = small_pair()
    x = feats(2, 64, 64)
    with torch.no_grad(), probes.recording() as rec:
        out_cached = cached(x)
    assert [n for n, _ in rec] == ["encoder.pos_embed"] and rec[0][1] is cached.pos_embed2
    with torch.no_grad():
        out_plain = plain(x)
    for a, b in zip(out_cached, out_plain):
        assert torch.equal(a, b)


@pytest.mark.parametrize("height,width", [(96, 96), (64, 96), (128, 64)])
def test_eval_at_other_size_computes_its_own_embedding(height, width):
    cached, plain = small_pair(seed=1)
    x = feats(1, height, width, seed=2)
    with torch.no_grad(), probes.recording() as rec:
        out_cached = cached(x)
    pos = rec[0][1]
    assert tuple(pos.shape) == (1, (height // 32) * (width // 32), 32)
    assert torch.equal(pos, HybridEncoder.build_2d_sincos_position_embedding(width // 32, height // 32, 32, 10000))
    with torch.no_grad():
        out_plain = plain(x)
    for a, b, s in zip(out_cached, out_plain, (8, 16, 32)):
        assert tuple(a.shape) == (1, 32, height // s, width // s)
        assert torch.equal(a, b)


def test_training_computes_embedding_even_at_eval_spatial_size():
    cached, _ = small_pair()
    cached.train()
    with probes.recording() as rec:
        cached(feats(2, 64, 64))
    assert rec[0][1] is not cached.pos_embed2
    assert torch.equal(rec[0][1], cached.pos_embed2)


def test_transformer_layer_is_post_norm_with_position_on_queries_and_keys():
    torch.manual_seed(3)
    enc = HybridEncoder(**SMALL).eval()
    layer = enc.encoder[0].layers[0]
    src = torch.randn(2, 6, 32)
    pos = torch.randn(1, 6, 32)
    with torch.no_grad():
        got = layer(src, pos_embed=pos)
        a = layer.self_attn(src + pos, src + pos, src)[0]
        x = layer.norm1(src + a)
        want = layer.norm2(x + layer.linear2(F.gelu(layer.linear1(x))))
    assert torch.equal(got, want)


def test_ccfm_wiring_matches_the_official_order():
    torch.manual_seed(4)
    enc = randomise_bn_(HybridEncoder(**SMALL), 5).eval()
    x = feats(2, 64, 96, seed=6)
    with torch.no_grad():
        got = enc(x)
        p0, p1, p2 = (proj(f) for proj, f in zip(enc.input_proj, x))
        b, c, h, w = p2.shape
        pos = HybridEncoder.build_2d_sincos_position_embedding(w, h, c, 10000.)
        memory = enc.encoder[0](p2.flatten(2).transpose(1, 2), pos_embed=pos)
        p2 = memory.transpose(1, 2).reshape(b, c, h, w)
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")
        # top-down: the lateral conv output replaces the higher level for the PAN
        lat2 = enc.lateral_convs[0](p2)
        f1 = enc.fpn_blocks[0](torch.cat([up(lat2), p1], 1))
        lat1 = enc.lateral_convs[1](f1)
        f0 = enc.fpn_blocks[1](torch.cat([up(lat1), p0], 1))
        # bottom-up
        o1 = enc.pan_blocks[0](torch.cat([enc.downsample_convs[0](f0), lat1], 1))
        o2 = enc.pan_blocks[1](torch.cat([enc.downsample_convs[1](o1), lat2], 1))
    for name, a, b in zip(("s8", "s16", "s32"), got, (f0, o1, o2)):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("channels,act", [(16, "silu"), (64, "relu")])
def test_repvgg_deploy_equals_two_branch_eval(channels, act):
    torch.manual_seed(7)
    block = randomise_bn_(RepVggBlock(channels, channels, act=act), 8).eval()
    keys = list(block.state_dict())
    x = torch.randn(2, channels, 9, 7)
    with torch.no_grad():
        two_branch = block(x)
        block.convert_to_deploy()
        fused = block(x)
    assert list(block.state_dict()) == keys + ["conv.weight", "conv.bias"]
    assert tuple(block.conv.weight.shape) == (channels, channels, 3, 3)
    # float32 re-association of conv+BN into one conv: measured 3.2e-7 relative to max |y| ~ 3-4
    torch.testing.assert_close(fused, two_branch, rtol=0, atol=2e-6 * float(two_branch.abs().max()))


def test_repvgg_deploy_is_idempotent():
    torch.manual_seed(9)
    block = randomise_bn_(RepVggBlock(8, 8, act="silu"), 10).eval()
    block.convert_to_deploy()
    first = block.conv.weight.clone(), block.conv.bias.clone()
    block.convert_to_deploy()
    assert torch.equal(block.conv.weight, first[0]) and torch.equal(block.conv.bias, first[1])


def test_batch_one_gradient_equals_per_sample_gradient():
    """In eval mode each sample is independent, so a batch-of-1 input gradient must equal
    the same sample's gradient inside a batch of 2. With the official
    ``flatten(2).permute(0, 2, 1)`` torch 2.13 CPU gets it wrong by O(1)."""
    cached, _ = small_pair(seed=11)
    one = feats(1, 96, 64, seed=12)
    other = feats(1, 96, 64, seed=13)
    rng = np.random.default_rng(14)
    weights = [torch.tensor(rng.standard_normal((1, 32, 96 // s, 64 // s)), dtype=torch.float32) for s in (8, 16, 32)]

    def input_grads(batch_feats, n):
        xs = [f.clone().requires_grad_(True) for f in batch_feats]
        outs = cached(xs)
        loss = sum((o[:1] * wt).sum() for o, wt in zip(outs, weights))
        return [g[:1] for g in torch.autograd.grad(loss, xs)]

    single = input_grads(one, 1)
    pair = input_grads([torch.cat([a, b]) for a, b in zip(one, other)], 2)
    for a, b in zip(single, pair):
        # different batch sizes take different BLAS blockings: measured 3e-8 against max |grad| 0.31
        torch.testing.assert_close(a, b, rtol=0, atol=3e-7)
