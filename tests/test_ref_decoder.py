"""Reference RTDETRTransformer: official state_dict names/shapes and parameter
counts, initialisation, anchors, eval at other sizes, eval_idx, training outputs,
gradient paths of the iterative box refinement, the top-k override, and
MSDeformableAttention against a naive NumPy bilinear-sampling implementation."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from rtdetr_common import probes
from rtdetr_common.noise import NumpyDenoisingNoise
from reference_pytorch.rtdetr.rtdetr_decoder import MSDeformableAttention, RTDETRTransformer
from reference_pytorch.rtdetr.utils import deformable_attention_core_func

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def official_decoder_entries(name):
    rows = []
    with open(os.path.join(ROOT, "fixtures", "official", f"{name}_state_dict.tsv")) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            if key.startswith("decoder."):
                rows.append((key[len("decoder."):], shape))
    return rows


def small_decoder(**kw):
    args = dict(num_classes=10, hidden_dim=64, num_queries=30, feat_channels=[32, 48, 64],
                num_decoder_layers=3, dim_feedforward=128, num_denoising=20, eval_spatial_size=[64, 64])
    args.update(kw)
    return RTDETRTransformer(**args)


def randomise_(model, seed):
    """Every parameter and BN statistic drawn at a realistic scale (fresh init is
    degenerate: zero box heads make every layer's boxes equal)."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g)

    touched = set()
    with torch.no_grad():
        for mname, m in model.named_modules():
            own = {n: p for n, p in m.named_parameters(recurse=False)}
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(randn(m.weight.shape) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None and mname.endswith("sampling_offsets"):
                    m.bias.add_(randn(m.bias.shape))  # spread around the grid init
                elif m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias.shape))
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.1 * randn(m.weight.shape))
                m.bias.copy_(0.1 * randn(m.bias.shape))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * randn(m.running_mean.shape))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(randn(m.weight.shape))
            elif isinstance(m, nn.MultiheadAttention):
                m.in_proj_weight.copy_(randn(m.in_proj_weight.shape) / math.sqrt(m.embed_dim))
                m.in_proj_bias.copy_(0.1 * randn(m.in_proj_bias.shape))
            else:
                continue
            touched.update(f"{mname}.{n}" if mname else n for n in own)
    missing = {n for n, _ in model.named_parameters()} - touched
    assert not missing, missing
    return model


def make_feats(bs, size, channels=(32, 48, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, c, size // s, size // s, generator=g) for c, s in zip(channels, (8, 16, 32))]


def make_targets(counts, seed=0, num_classes=10):
    rng = np.random.default_rng(seed)
    return [{"labels": torch.as_tensor(rng.integers(0, num_classes, size=n), dtype=torch.int64),
             "boxes": torch.as_tensor(np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))], 1),
                                      dtype=torch.float32)} for n in counts]


@pytest.mark.parametrize("name,layers,count", [("rtdetr_r18vd", 3, 4_019_376), ("rtdetr_r50vd", 6, 7_466_508)])
def test_state_dict_matches_official(name, layers, count):
    m = RTDETRTransformer(feat_channels=[256, 256, 256], num_decoder_layers=layers, eval_spatial_size=[640, 640])
    got = [(k, str(tuple(v.shape))) for k, v in m.state_dict().items()]
    assert got == official_decoder_entries(name)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == count
    assert not hasattr(m, "tgt_embed")


def test_initialisation():
    m = RTDETRTransformer(feat_channels=[256, 256, 256], num_decoder_layers=3)
    attn = m.decoder.layers[0].cross_attn
    # head k points along angle 2*pi*k/8, scaled so the larger coordinate is 1
    directions = np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], np.float32)
    want = directions[:, None, None, :] * np.arange(1, 5, dtype=np.float32)[None, None, :, None]
    want = np.broadcast_to(want, (8, 3, 4, 2)).reshape(-1)
    # float32 cos/sin of 2*pi*k/8 are not exact: measured max relative error 6.6e-7
    np.testing.assert_allclose(attn.sampling_offsets.bias.detach().numpy(), want, rtol=1e-6, atol=1e-6)
    assert attn.sampling_offsets.weight.abs().max() == 0
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    assert attn.value_proj.bias.abs().max() == 0 and attn.output_proj.bias.abs().max() == 0
    xavier = math.sqrt(6 / 512)
    assert 0.9 * xavier < attn.value_proj.weight.abs().max() <= xavier
    prior = -math.log(99)
    for head in [m.enc_score_head, *m.dec_score_head]:
        np.testing.assert_allclose(head.bias.detach().numpy(), prior, rtol=1e-6)
    for mlp in [m.enc_bbox_head, *m.dec_bbox_head]:
        assert mlp.layers[-1].weight.abs().max() == 0 and mlp.layers[-1].bias.abs().max() == 0
    assert m.denoising_class_embed.weight[80].abs().max() == 0
    assert m.denoising_class_embed.padding_idx == 80
    bound = math.sqrt(6 / (4 + 512))
    assert m.query_pos_head.layers[0].weight.abs().max() <= bound
    # the decoder layers are deep copies of one layer: identical at init
    sd = m.decoder.state_dict()
    for k, v in sd.items():
        if k.startswith("layers.1."):
            torch.testing.assert_close(v, sd["layers.0." + k[len("layers.1."):]], rtol=0, atol=0)


def test_anchors_640():
    m = RTDETRTransformer(feat_channels=[256, 256, 256], num_decoder_layers=1, eval_spatial_size=[640, 640])
    anchors, valid = m.anchors, m.valid_mask
    assert tuple(anchors.shape) == (1, 8400, 4) and tuple(valid.shape) == (1, 8400, 1)
    assert "anchors" not in m.state_dict() and "valid_mask" not in m.state_dict()
    # level 80x80: centres 0.5/80 = 0.00625 and 79.5/80 lie outside (0.01, 0.99), so
    # the border ring is invalid (78*78 valid); 40x40 and 20x20 are all valid.
    assert int(valid.sum()) == 78 * 78 + 40 * 40 + 20 * 20
    v = valid[0, :6400, 0].reshape(80, 80)
    assert not v[0].any() and not v[:, -1].any() and v[1:-1, 1:-1].all()
    assert torch.isinf(anchors[~valid.expand_as(anchors)]).all()
    # anchor (level 1, row 3, col 5): centre ((5+.5)/40, (3+.5)/40), size 0.1 -> logits
    a = anchors[0, 6400 + 3 * 40 + 5].double().numpy()
    p = np.array([5.5 / 40, 3.5 / 40, 0.1, 0.1])
    np.testing.assert_allclose(a, np.log(p / (1 - p)), rtol=1e-5)


def test_eval_at_other_size_and_precomputed_anchors():
    torch.manual_seed(0)
    a = randomise_(small_decoder(), 1).eval()
    b = small_decoder(eval_spatial_size=None).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    with torch.no_grad():
        for size, tokens in [(64, 84), (96, 189)]:
            feats = make_feats(2, size)
            with probes.recording() as rec:
                out_a = a(feats)
            anchors = dict(rec)["decoder.anchors"]
            assert tuple(anchors.shape) == (1, tokens, 4)
            out_b = b(feats)
            assert tuple(out_a["pred_boxes"].shape) == (2, 30, 4)
            torch.testing.assert_close(out_a["pred_logits"], out_b["pred_logits"], rtol=0, atol=0)
            torch.testing.assert_close(out_a["pred_boxes"], out_b["pred_boxes"], rtol=0, atol=0)
    assert a.anchors.shape[1] == 84  # the cached anchors are untouched


@pytest.mark.parametrize("eval_idx", [0, 1, -1])
def test_eval_idx_equals_training_layer(eval_idx):
    """Eval computes layers up to eval_idx and returns that layer, equal to the
    training output of the same layer (training refines from the non-detached
    previous boxes, which have the same value)."""
    m = randomise_(small_decoder(num_denoising=0, eval_idx=eval_idx), 2)
    feats = make_feats(2, 64)
    m.train()
    m.input_proj.eval()  # batch statistics would differ from eval's running ones
    with torch.no_grad():
        out = m(feats)
        per_layer = [*out["aux_outputs"][:2], out]
        m.eval()
        with probes.recording() as rec:
            ev = m(feats)
    k = eval_idx % 3
    names = [n for n, _ in rec if n.startswith("decoder.layer")]
    assert names == [f"decoder.layer{k}.boxes", f"decoder.layer{k}.logits"]
    torch.testing.assert_close(ev["pred_boxes"], per_layer[k]["pred_boxes"], rtol=0, atol=0)
    torch.testing.assert_close(ev["pred_logits"], per_layer[k]["pred_logits"], rtol=0, atol=0)
    assert set(ev) == {"pred_logits", "pred_boxes"}


def weighted_sum(out, seed=0):
    """A scalar that depends on every output tensor (random weights: no cancellation)."""
    g = torch.Generator().manual_seed(seed)
    tensors = [out["pred_logits"], out["pred_boxes"]]
    for aux in out.get("aux_outputs", []) + out.get("dn_aux_outputs", []):
        tensors += [aux["pred_logits"], aux["pred_boxes"]]
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in tensors)


@settings(max_examples=4)
@given(counts=st.lists(st.integers(0, 4), min_size=1, max_size=3), learnt=st.booleans(),
       size=st.sampled_from([64, 96]))
def test_training_outputs_and_every_parameter_gets_gradient(counts, learnt, size):
    m = randomise_(small_decoder(learnt_init_query=learnt), 3).train()
    m.denoising_noise = NumpyDenoisingNoise(0)
    feats = make_feats(len(counts), size)
    out = m(feats, make_targets(counts))
    bs = len(counts)
    assert tuple(out["pred_logits"].shape) == (bs, 30, 10) and tuple(out["pred_boxes"].shape) == (bs, 30, 4)
    assert len(out["aux_outputs"]) == 3  # layers 0, 1 and the encoder's top-k proposals
    if max(counts) == 0:
        assert "dn_aux_outputs" not in out and "dn_meta" not in out
    else:
        max_gt = max(counts)
        n = 2 * max_gt * max(1, 20 // max_gt)
        assert out["dn_meta"]["dn_num_split"] == [n, 30]
        assert len(out["dn_aux_outputs"]) == 3
        assert all(tuple(a["pred_boxes"].shape) == (bs, n, 4) for a in out["dn_aux_outputs"])
    weighted_sum(out).backward()
    for name, p in m.named_parameters():
        if name.startswith("denoising_class_embed") and max(counts) == 0:
            assert p.grad is None or p.grad.abs().max() == 0
            continue
        assert p.grad is not None and p.grad.abs().max() > 0, name
    if max(counts) > 0:
        # the padding row of the denoising embedding never gets a gradient
        assert m.denoising_class_embed.weight.grad[10].abs().max() == 0


def test_refinement_gradient_paths():
    """Layer i's training boxes are refined from layer i-1's NON-detached boxes, while
    the layers themselves see detached references: layer 1's boxes reach
    dec_bbox_head.0, layer 2's boxes and every layer's logits do not."""
    m = randomise_(small_decoder(num_denoising=0), 4).train()
    feats = make_feats(2, 64)
    head0 = list(m.dec_bbox_head[0].parameters())

    def grads(select):
        m.zero_grad()
        out = m(feats)
        select(out).sum().backward()
        return max(float(p.grad.abs().max()) if p.grad is not None else 0.0 for p in head0)

    assert grads(lambda o: o["aux_outputs"][0]["pred_boxes"]) > 0
    assert grads(lambda o: o["aux_outputs"][1]["pred_boxes"]) > 0
    assert grads(lambda o: o["pred_boxes"]) == 0
    assert grads(lambda o: o["aux_outputs"][1]["pred_logits"]) == 0


def test_topk_override():
    m = randomise_(small_decoder(), 5).eval()
    feats = make_feats(2, 64)
    forced = np.stack([np.arange(30) * 2, np.arange(30) + 50]).astype(np.int64)
    with torch.no_grad(), probes.recording() as rec, probes.forcing({"decoder.topk_ind": forced}):
        m(feats)
    rec = dict(rec)
    # the probe keeps the model's own decision; what follows uses the forced one
    scores = rec["decoder.enc_outputs_class"].numpy().max(-1)
    for b in range(2):
        assert set(rec["decoder.topk_ind"][b].tolist()) == set(np.argsort(-scores[b])[:30].tolist())
    want = np.take_along_axis(rec["decoder.enc_outputs_class"].numpy(), forced[..., None], 1)
    np.testing.assert_array_equal(rec["decoder.enc_topk_logits"].numpy(), want)
    # unforced: the selection is the top-30 by max class score
    with torch.no_grad(), probes.recording() as rec:
        m(feats)
    rec = dict(rec)
    scores = rec["decoder.enc_outputs_class"].numpy().max(-1)
    for b in range(2):
        assert set(rec["decoder.topk_ind"][b].tolist()) == set(np.argsort(-scores[b])[:30].tolist())


def test_extra_level_projection():
    """num_levels 4 with three feature maps: a 3x3 stride-2 projection of the last map."""
    m = randomise_(small_decoder(num_levels=4), 6).eval()
    assert tuple(m.input_proj[3].conv.weight.shape) == (64, 64, 3, 3)
    assert m.feat_strides == [8, 16, 32, 64]
    with torch.no_grad(), probes.recording() as rec:
        out = m(make_feats(2, 64))
    # 8x8 + 4x4 + 2x2 + 1x1 tokens (64 / 64 = 1: the precomputed anchors are used)
    assert tuple(dict(rec)["decoder.anchors"].shape) == (1, 85, 4)
    assert torch.isfinite(out["pred_boxes"]).all()


def naive_core(value, shapes, locations, weights):
    """Bilinear sampling (zero padding, align_corners=False), one point at a time."""
    bs, _, heads, c = value.shape
    _, lq, _, levels, points, _ = locations.shape
    out = np.zeros((bs, lq, heads, c))
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for b in range(bs):
        for lvl, (h, w) in enumerate(shapes):
            v = value[b, starts[lvl]:starts[lvl + 1]].reshape(h, w, heads, c)
            for q in range(lq):
                for hd in range(heads):
                    for p in range(points):
                        x = locations[b, q, hd, lvl, p, 0] * w - 0.5
                        y = locations[b, q, hd, lvl, p, 1] * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = np.zeros(c)
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * v[yy, xx, hd]
                        out[b, q, hd] += weights[b, q, hd, lvl, p] * acc
    return out.reshape(bs, lq, heads * c)


@settings(max_examples=5)
@given(ref_dim=st.sampled_from([2, 4]), use_mask=st.booleans(), seed=st.integers(0, 1000))
def test_msda_against_naive(ref_dim, use_mask, seed):
    rng = np.random.default_rng(seed)
    shapes = [[4, 5], [2, 3]]
    attn = MSDeformableAttention(embed_dim=8, num_heads=2, num_levels=2, num_points=3)
    randomise_(attn, seed)
    lv = sum(h * w for h, w in shapes)
    query = rng.normal(size=(2, 5, 8)).astype(np.float32)
    value = rng.normal(size=(2, lv, 8)).astype(np.float32)
    if ref_dim == 4:
        ref = np.concatenate([rng.uniform(0.1, 0.9, (2, 5, 1, 2)), rng.uniform(0.1, 0.6, (2, 5, 1, 2))], -1)
    else:
        ref = rng.uniform(0, 1, (2, 5, 2, 2))
    ref = ref.astype(np.float32)
    mask = rng.uniform(size=(2, lv)) > 0.3 if use_mask else None
    with torch.no_grad():
        got = attn(torch.as_tensor(query), torch.as_tensor(ref), torch.as_tensor(value), shapes,
                   None if mask is None else torch.as_tensor(mask)).numpy()

    def lin(layer, x):
        return x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()

    v = lin(attn.value_proj, value.astype(np.float64))
    if mask is not None:
        v = v * mask[..., None]
    v = v.reshape(2, lv, 2, 4)
    off = lin(attn.sampling_offsets, query.astype(np.float64)).reshape(2, 5, 2, 2, 3, 2)
    logits = lin(attn.attention_weights, query.astype(np.float64)).reshape(2, 5, 2, 6)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = (w / w.sum(-1, keepdims=True)).reshape(2, 5, 2, 2, 3)
    if ref_dim == 4:
        loc = ref[:, :, None, :, None, :2] + off / 3 * ref[:, :, None, :, None, 2:] * 0.5
    else:
        normaliser = np.array([[5, 4], [3, 2]], np.float64)  # (W, H) per level
        loc = ref[:, :, None, :, None, :] + off / normaliser[None, None, None, :, None, :]
    want = lin(attn.output_proj, naive_core(v, shapes, loc, w))
    # float32 module vs float64 naive: measured max 7.8e-7 (80 cases), outputs ~1
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    # the core alone in float64, same sampling locations: measured max 5.6e-16
    core = deformable_attention_core_func(torch.as_tensor(v), shapes, torch.as_tensor(loc), torch.as_tensor(w))
    np.testing.assert_allclose(core.numpy(), naive_core(v, shapes, loc, w), atol=1e-12, rtol=1e-10)


class FormulaBatchNorm(nn.Module):
    """Training-mode batch norm written with elementwise ops (autograd-exact oracle)."""

    def __init__(self, bn):
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.eps = bn.eps

    def forward(self, x):
        centred = x - x.mean((0, 2, 3), keepdim=True)
        var = (centred * centred).mean((0, 2, 3), keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("bs,size,levels", [(1, 64, 3), (1, 96, 4), (2, 64, 3)])
def test_input_proj_gradients_at_batch_one(bs, size, levels):
    """Training gradients equal those of a copy whose input-projection BatchNorms are
    written with elementwise ops, batch size 1 included (torch 2.13's CPU BatchNorm
    backward is wrong at batch 1 for the gradient strides that the official
    flatten(2).permute(0, 2, 1) produces: measured relative error 3.1 there)."""
    import copy
    m = randomise_(small_decoder(num_denoising=0, num_levels=levels), 8).double().train()
    oracle = copy.deepcopy(m)
    for proj in oracle.input_proj:
        proj.norm = FormulaBatchNorm(proj.norm)
    feats = [f.double() for f in make_feats(bs, size, seed=8)]
    g = torch.Generator().manual_seed(9)
    weights = None
    for model in (m, oracle):
        tensors = _flat(model(feats))
        if weights is None:
            weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in tensors]
        sum((t * w).sum() for t, w in zip(tensors, weights)).backward()
    want = dict(oracle.named_parameters())
    for name, p in m.named_parameters():
        if name.startswith("input_proj"):
            scale = float(want[name].grad.abs().max())
            assert scale > 0
            # float64, same model up to BN's fused kernel: measured relative 1.9e-15
            assert float((p.grad - want[name].grad).abs().max()) <= 1e-10 * scale, name


def _flat(out):
    tensors = [out["pred_logits"], out["pred_boxes"]]
    for aux in out.get("aux_outputs", []):
        tensors += [aux["pred_logits"], aux["pred_boxes"]]
    return tensors
