"""Twin parity of the RT-DETR decoder: official state_dict names/shapes on the
Jittor side, MSDeformableAttention (incl. value_mask) outputs and gradients, and the
whole RTDETRTransformer in eval and training mode (denoising on, same NumPy noise,
torch's top-k imposed through the probe override): predictions, aux and dn outputs,
dn_meta, probes, and the gradient of every trainable parameter."""
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import example, given, settings, strategies as st

from rtdetr_jittor._env import jt
from rtdetr_jittor import compat
from rtdetr_common import probes
from rtdetr_common.noise import NumpyDenoisingNoise
from reference_pytorch.rtdetr import rtdetr_decoder as ref
from rtdetr_jittor.rtdetr import rtdetr_decoder as twin

pytestmark = pytest.mark.parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tolerances, float32 on CPU, realistic random weights, measured over 4 eval and 5
# training configurations (bs 1-3, 64/96 input, 3/4 levels, 0-4 GT, learnt queries):
# forward max |jittor - torch| 6.6e-6 (logits of magnitude ~3, through 3 decoder
# layers of LayerNorm/softmax/grid_sample) -> atol 2e-5 + rtol 1e-5;
FWD_ATOL, FWD_RTOL = 2e-5, 1e-5
# gradients, relative to each parameter's largest gradient: max 3.3e-6 -> 3e-5.
GRAD_REL = 3e-5


def official_decoder_entries(name):
    rows = []
    with open(os.path.join(ROOT, "fixtures", "official", f"{name}_state_dict.tsv")) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            if key.startswith("decoder."):
                rows.append((key[len("decoder."):], shape))
    return rows


def randomise_(model, seed):
    """Every torch parameter and BN statistic at a realistic random scale (fresh init
    is degenerate: zero box heads make every layer's boxes equal)."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g)

    with torch.no_grad():
        for mname, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(randn(m.weight.shape) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None and mname.endswith("sampling_offsets"):
                    m.bias.add_(randn(m.bias.shape))
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
    return model


def twins(cls_name, seed, **kw):
    """The reference module with random weights and its Jittor twin loaded from it."""
    t = randomise_(getattr(ref, cls_name)(**kw), seed)
    j = getattr(twin, cls_name)(**kw)
    compat.load_state_dict_checked(j, {k: v.detach().numpy() for k, v in t.state_dict().items()})
    return t, j


def decoder_kwargs(**kw):
    args = dict(num_classes=10, hidden_dim=64, num_queries=30, feat_channels=[32, 48, 64],
                num_decoder_layers=3, dim_feedforward=128, num_denoising=20, eval_spatial_size=[64, 64])
    args.update(kw)
    return args


def feats_np(bs, size, channels=(32, 48, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(bs, c, size // s, size // s)).astype(np.float32) for c, s in zip(channels, (8, 16, 32))]


def targets_np(counts, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 10, size=n).astype(np.int64),
             np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))], 1).astype(np.float32))
            for n in counts]


def flat_outputs(out):
    """(name, tensor) for every prediction tensor of a decoder output dict."""
    items = [("pred_logits", out["pred_logits"]), ("pred_boxes", out["pred_boxes"])]
    for group in ("aux_outputs", "dn_aux_outputs"):
        for i, aux in enumerate(out.get(group, [])):
            items += [(f"{group}.{i}.pred_logits", aux["pred_logits"]), (f"{group}.{i}.pred_boxes", aux["pred_boxes"])]
    return items


def to_np(x):
    return x.numpy() if isinstance(x, jt.Var) else x.detach().numpy()


def assert_close(name, got, want, atol=FWD_ATOL, rtol=FWD_RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=name)
    return float(np.abs(got - want).max(initial=0))


def assert_grads_close(t_module, j_grads, unused=(), rel=GRAD_REL):
    """Every trainable parameter: a non-zero gradient on both sides, equal to within
    ``rel`` of the parameter's largest gradient (``unused``: no gradient on either
    side). Returns the worst relative error."""
    t_params = dict(t_module.named_parameters())
    assert set(j_grads) == set(t_params), set(j_grads) ^ set(t_params)
    worst = 0.0
    for name, gj in j_grads.items():
        gt = t_params[name].grad
        gj = gj.numpy()
        if name in unused:
            assert gt is None or float(gt.abs().max()) == 0, name
            assert np.abs(gj).max() == 0, name
            continue
        assert gt is not None and float(gt.abs().max()) > 0, f"torch: no gradient for {name}"
        assert np.abs(gj).max() > 0, f"jittor: no gradient for {name}"
        scale = float(gt.abs().max())
        err = float(np.abs(gj - gt.numpy()).max()) / scale
        assert err < rel, f"{name}: relative gradient error {err:.2e} (max |grad| {scale:.2e})"
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("name,layers,count", [("rtdetr_r18vd", 3, 4_019_376), ("rtdetr_r50vd", 6, 7_466_508)])
def test_jittor_state_dict_matches_official(name, layers, count):
    m = twin.RTDETRTransformer(feat_channels=[256, 256, 256], num_decoder_layers=layers, eval_spatial_size=[640, 640])
    got = [(k, "()" if k.endswith("num_batches_tracked") and tuple(v.shape) == (1,) else str(tuple(v.shape)))
           for k, v in m.state_dict().items()]
    assert got == official_decoder_entries(name)
    assert sum(p.numel() for _, p in compat.trainable_named_parameters(m)) == count
    assert tuple(m._anchors.shape) == (1, 8400, 4) and int(m._valid_mask.sum()) == 78 * 78 + 40 * 40 + 20 * 20


DETERMINISTIC_INIT = re.compile(
    r"(sampling_offsets|attention_weights)\.|(value_proj|output_proj|out_proj)\.bias|in_proj_bias|norm\d?\."
    r"|enc_output\.1\.|score_head(\.\d+)?\.bias|bbox_head(\.\d+)?\.layers\.2\.")


def test_jittor_initialisation_follows_reference():
    t = ref.RTDETRTransformer(**decoder_kwargs())
    j = twin.RTDETRTransformer(**decoder_kwargs())
    sd_t = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    sd_j = {k: v.numpy().reshape(sd_t[k].shape) for k, v in j.state_dict().items()}
    checked = 0
    for k in sd_t:
        if DETERMINISTIC_INIT.search(k):
            # constants and the sampling-offset grid (float32 cos/sin: within 1e-6)
            np.testing.assert_allclose(sd_j[k], sd_t[k], rtol=1e-6, atol=1e-6, err_msg=k)
            checked += 1
        elif k.endswith("weight") and sd_t[k].size >= 256:
            # random draws: the same distribution (spread within 15% of torch's)
            ratio = sd_j[k].std() / sd_t[k].std()
            assert 0.85 < ratio < 1.15, (k, ratio)
            checked += 1
    assert checked > 100
    assert np.abs(sd_j["denoising_class_embed.weight"][10]).max() == 0
    # deep-copied layers start identical
    for k in sd_j:
        if k.startswith("decoder.layers.1."):
            np.testing.assert_array_equal(sd_j[k], sd_j["decoder.layers.0." + k[len("decoder.layers.1."):]])


@settings(max_examples=4)
@given(ref_dim=st.sampled_from([2, 4]), use_mask=st.booleans(), seed=st.integers(0, 1000))
def test_msda_parity(ref_dim, use_mask, seed):
    rng = np.random.default_rng(seed)
    shapes = [[6, 5], [3, 3], [2, 1]]
    kw = dict(embed_dim=32, num_heads=4, num_levels=3, num_points=4)
    t, j = twins("MSDeformableAttention", seed, **kw)
    lv = sum(h * w for h, w in shapes)
    query = rng.normal(size=(2, 7, 32)).astype(np.float32)
    value = rng.normal(size=(2, lv, 32)).astype(np.float32)
    if ref_dim == 4:
        refp = np.concatenate([rng.uniform(0.1, 0.9, (2, 7, 1, 2)), rng.uniform(0.05, 0.6, (2, 7, 1, 2))], -1)
    else:
        refp = rng.uniform(0, 1, (2, 7, 3, 2))
    refp = refp.astype(np.float32)
    mask = rng.uniform(size=(2, lv)) > 0.3 if use_mask else None
    gout = rng.normal(size=(2, 7, 32)).astype(np.float32)

    tq, tr, tv = (torch.tensor(a, requires_grad=True) for a in (query, refp, value))
    out_t = t(tq, tr, tv, shapes, None if mask is None else torch.as_tensor(mask))
    (out_t * torch.as_tensor(gout)).sum().backward()

    jq, jr, jv = jt.array(query), jt.array(refp), jt.array(value)
    out_j = j(jq, jr, jv, shapes, None if mask is None else jt.array(mask))
    params = compat.trainable_named_parameters(j)
    grads = jt.grad((out_j * jt.array(gout)).sum(), [jq, jr, jv] + [p for _, p in params])

    # over 24 cases: output (magnitude ~1.4) max 5.0e-7; input gradients max relative
    # 9.6e-7 (query), 6.5e-7 (reference points), 8.7e-7 (value); parameters 2.4e-6
    assert_close("output", out_j.numpy(), out_t.detach().numpy(), atol=5e-6, rtol=0)
    for name, gj, gt in zip(("query", "ref", "value"), grads[:3], (tq.grad, tr.grad, tv.grad)):
        err = np.abs(gj.numpy() - gt.numpy()).max() / np.abs(gt.numpy()).max()
        assert err < 1e-5, (name, err)
    assert_grads_close(t, {n: g for (n, _), g in zip(params, grads[3:])})


def run_pair(t, j, feats, targets=None, seed=0, force=True):
    """Run both twins on the same inputs (torch's top-k imposed on Jittor); returns
    outputs, probe records and, in training, Jittor's gradients by name."""
    t_targets = j_targets = None
    if targets is not None:
        t_targets = [{"labels": torch.as_tensor(l), "boxes": torch.as_tensor(b)} for l, b in targets]
        j_targets = [{"labels": jt.array(l), "boxes": jt.array(b)} for l, b in targets]
        t.denoising_noise = NumpyDenoisingNoise(seed)
        j.denoising_noise = NumpyDenoisingNoise(seed)
    with probes.recording() as rec_t:
        out_t = t([torch.as_tensor(f) for f in feats], t_targets)
    rec_t = dict(rec_t)
    forced = {"decoder.topk_ind": rec_t["decoder.topk_ind"].numpy()} if force else {}
    with probes.recording() as rec_j, probes.forcing(forced):
        out_j = j([jt.array(f) for f in feats], j_targets)
    rec_j = dict(rec_j)
    grads = None
    if t.training:
        rng = np.random.default_rng(seed + 1)
        weights = [rng.normal(size=tuple(x.shape)).astype(np.float32) for _, x in flat_outputs(out_t)]
        sum(((x * torch.as_tensor(w)).sum() for (_, x), w in zip(flat_outputs(out_t), weights))).backward()
        loss_j = sum([(x * jt.array(w)).sum() for (_, x), w in zip(flat_outputs(out_j), weights)])
        params = compat.trainable_named_parameters(j)
        grads = dict(zip([n for n, _ in params], jt.grad(loss_j, [p for _, p in params])))
    return out_t, out_j, rec_t, rec_j, grads


def compare_outputs(out_t, out_j, rec_t, rec_j):
    names_t = [n for n, _ in flat_outputs(out_t)]
    assert [n for n, _ in flat_outputs(out_j)] == names_t
    worst = 0.0
    for (name, xt), (_, xj) in zip(flat_outputs(out_t), flat_outputs(out_j)):
        worst = max(worst, assert_close(name, to_np(xj), to_np(xt)))
    assert set(rec_j) == set(rec_t)
    for name in rec_t:
        if name == "decoder.anchors":
            a, b = to_np(rec_j[name]), to_np(rec_t[name])
            assert (np.isinf(a) == np.isinf(b)).all()
            # float32 log on both sides: 96% bit-equal, max 2.4e-7 (1 ulp at |4.4|)
            assert_close(name, a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-6, rtol=0)
        elif name == "decoder.enc_outputs_coord_unact":
            a, b = to_np(rec_j[name]), to_np(rec_t[name])
            assert (np.isinf(a) == np.isinf(b)).all()
            assert_close(name, a[np.isfinite(a)], b[np.isfinite(b)])
        elif name in ("decoder.valid_mask", "decoder.topk_ind", "decoder.dn.attn_mask"):
            np.testing.assert_array_equal(to_np(rec_j[name]), to_np(rec_t[name]), err_msg=name)
        else:
            worst = max(worst, assert_close(name, to_np(rec_j[name]), to_np(rec_t[name])))
    if "dn_meta" in out_t:
        mt, mj = out_t["dn_meta"], out_j["dn_meta"]
        assert mj["dn_num_group"] == mt["dn_num_group"] and mj["dn_num_split"] == mt["dn_num_split"]
        for a, b in zip(mj["dn_positive_idx"], mt["dn_positive_idx"]):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    else:
        assert "dn_meta" not in out_j
    return worst


@settings(max_examples=3)
@given(bs=st.integers(1, 2), size=st.sampled_from([64, 96]), levels=st.sampled_from([3, 4]),
       seed=st.integers(0, 1000))
@example(bs=1, size=96, levels=4, seed=2)  # off eval_spatial_size, extra projected level
def test_decoder_parity_eval(bs, size, levels, seed):
    """Eval mode, at eval_spatial_size (64) and at another size (96)."""
    t, j = twins("RTDETRTransformer", seed, **decoder_kwargs(num_levels=levels))
    t.eval()
    j.eval()
    with torch.no_grad():
        out_t, out_j, rec_t, rec_j, _ = run_pair(t, j, feats_np(bs, size, seed=seed))
    assert set(out_j) == {"pred_logits", "pred_boxes"}
    compare_outputs(out_t, out_j, rec_t, rec_j)
    assert [n for n in rec_j if n.startswith("decoder.layer")] == ["decoder.layer2.boxes", "decoder.layer2.logits"]


def test_jittor_topk_selects_the_same_queries():
    """Without forcing, Jittor's own top-k picks the same set (random weights: no ties)."""
    t, j = twins("RTDETRTransformer", 7, **decoder_kwargs())
    t.eval()
    j.eval()
    with torch.no_grad():
        _, _, rec_t, rec_j, _ = run_pair(t, j, feats_np(2, 64, seed=7), force=False)
    a, b = rec_j["decoder.topk_ind"].numpy(), rec_t["decoder.topk_ind"].numpy()
    assert rec_j["decoder.topk_ind"].dtype == jt.int64
    for r in range(2):
        assert set(a[r].tolist()) == set(b[r].tolist())


@settings(max_examples=3)
@given(counts=st.lists(st.integers(0, 4), min_size=1, max_size=3), size=st.sampled_from([64, 96]),
       learnt=st.booleans(), seed=st.integers(0, 1000))
@example(counts=[0], size=64, learnt=False, seed=0)  # batch 1, no GT at all: no denoising
@example(counts=[3, 0, 1], size=96, learnt=True, seed=1)  # an image without GT among others
def test_decoder_parity_train(counts, size, learnt, seed):
    """Training mode with denoising: every output, probe and parameter gradient."""
    t, j = twins("RTDETRTransformer", seed, **decoder_kwargs(learnt_init_query=learnt))
    t.train()
    j.train()
    out_t, out_j, rec_t, rec_j, grads = run_pair(t, j, feats_np(len(counts), size, seed=seed),
                                                 targets_np(counts, seed), seed=seed)
    assert ("dn_meta" in out_j) == (max(counts) > 0)
    assert len(out_j["aux_outputs"]) == 3
    compare_outputs(out_t, out_j, rec_t, rec_j)
    # without any ground truth there are no denoising queries: the embedding is unused
    unused = {"denoising_class_embed.weight"} if max(counts) == 0 else set()
    assert_grads_close(t, grads, unused=unused)
    if not unused:
        assert np.abs(grads["denoising_class_embed.weight"].numpy()[10]).max() == 0
