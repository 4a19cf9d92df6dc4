"""Twin parity of contrastive denoising: with the same NumPy noise the Jittor
group (embedded labels, noised boxes, attention mask, dn_meta) equals the
reference's; ``compat.Embedding`` matches torch's padding_idx semantics; the
Jittor default noise source gives well-formed groups."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from rtdetr_jittor._env import jt
from rtdetr_jittor import compat
from rtdetr_common.noise import NumpyDenoisingNoise
from reference_pytorch.rtdetr.denoising import get_contrastive_denoising_training_group as ref_group
from rtdetr_jittor.rtdetr.denoising import get_contrastive_denoising_training_group as jt_group

pytestmark = pytest.mark.parity


def make_targets(counts, seed, num_classes=10):
    rng = np.random.default_rng(seed)
    out = []
    for n in counts:
        boxes = np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.02, 0.7, (n, 2))], 1).astype(np.float32)
        out.append((rng.integers(0, num_classes, size=n).astype(np.int64), boxes))
    torch_t = [{"labels": torch.as_tensor(l), "boxes": torch.as_tensor(b)} for l, b in out]
    jt_t = [{"labels": jt.array(l), "boxes": jt.array(b)} for l, b in out]
    return torch_t, jt_t


def embeddings(num_classes, dim, seed):
    t = nn.Embedding(num_classes + 1, dim, padding_idx=num_classes)
    j = compat.Embedding(num_classes + 1, dim, padding_idx=num_classes)
    w = np.random.default_rng(seed).normal(size=(num_classes + 1, dim)).astype(np.float32)
    with torch.no_grad():
        t.weight.copy_(torch.as_tensor(w))
    compat.load_state_dict_checked(j, {"weight": w})
    return t, j


def test_embedding_shim_matches_torch_padding_idx():
    fresh = compat.Embedding(11, 64, padding_idx=10)
    w = fresh.weight.numpy()
    assert np.abs(w[10]).max() == 0
    assert 0.8 < w[:10].std() < 1.2  # N(0, 1), as torch
    t, j = embeddings(10, 8, 0)
    idx = np.array([[0, 10, 3, 3], [10, 9, 1, 0]], dtype=np.int64)
    g = np.random.default_rng(1).normal(size=(2, 4, 8)).astype(np.float32)
    out_t = t(torch.as_tensor(idx))
    (out_t * torch.as_tensor(g)).sum().backward()
    out_j = j(jt.array(idx))
    grad_j = jt.grad((out_j * jt.array(g)).sum(), j.weight).numpy()
    # a gather and a scatter-add of the same float32 numbers: identical
    np.testing.assert_array_equal(out_j.numpy(), out_t.detach().numpy())
    np.testing.assert_array_equal(grad_j, t.weight.grad.numpy())
    assert np.abs(grad_j[10]).max() == 0 and np.abs(grad_j[3]).max() > 0


@settings(max_examples=6)
@given(counts=st.lists(st.integers(0, 6), min_size=1, max_size=3),
       num_denoising=st.sampled_from([0, 7, 20, 100]), ratio=st.sampled_from([0.5, 0.0, 1.0]),
       scale=st.sampled_from([1.0, 0.0, 0.4]), seed=st.integers(0, 2 ** 16))
def test_group_parity(counts, num_denoising, ratio, scale, seed):
    torch_t, jt_t = make_targets(counts, seed)
    emb_t, emb_j = embeddings(10, 16, seed)
    kw = dict(num_denoising=num_denoising, label_noise_ratio=ratio, box_noise_scale=scale)
    ref = ref_group(torch_t, 10, 7, emb_t, noise=NumpyDenoisingNoise(seed), **kw)
    got = jt_group(jt_t, 10, 7, emb_j, noise=NumpyDenoisingNoise(seed), **kw)
    if num_denoising == 0 or max(counts) == 0:
        assert ref == (None,) * 4 and got == (None,) * 4
        return
    cls_t, bbox_t, mask_t, meta_t = ref
    cls_j, bbox_j, mask_j, meta_j = got
    assert meta_j["dn_num_group"] == meta_t["dn_num_group"]
    assert meta_j["dn_num_split"] == meta_t["dn_num_split"]
    assert len(meta_j["dn_positive_idx"]) == len(meta_t["dn_positive_idx"])
    for a, b in zip(meta_j["dn_positive_idx"], meta_t["dn_positive_idx"]):
        assert a.dtype == jt.int64
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert mask_j.dtype == jt.bool
    np.testing.assert_array_equal(mask_j.numpy(), mask_t.numpy())
    # same labels picked from the same table: identical rows
    np.testing.assert_array_equal(cls_j.numpy(), cls_t.detach().numpy())
    # float32 box noise + inverse sigmoid on both sides (61% of values bit-equal), over
    # 60 random groups: as boxes (sigmoid) max 1.3e-7 -> atol 1e-6; as logits where
    # |logit| < 5 max 7.2e-6 -> 3e-5 (a 1-ulp box difference becomes up to 1e-5 in
    # logit space where sigmoid' >= 6.6e-3)
    bt, bj = bbox_t.numpy().astype(np.float64), bbox_j.numpy().astype(np.float64)
    np.testing.assert_allclose(1 / (1 + np.exp(-bj)), 1 / (1 + np.exp(-bt)), atol=1e-6, rtol=0)
    interior = np.abs(bt) < 5
    np.testing.assert_allclose(bj[interior], bt[interior], atol=3e-5, rtol=0)


def test_jittor_default_noise():
    """noise=None draws from Jittor's RNG: labels stay in range, padding is never
    noised, discrete structure equals the reference's."""
    counts = [3, 0, 5]
    torch_t, jt_t = make_targets(counts, 0)
    emb_t, emb_j = embeddings(10, 11, 0)
    eye = np.eye(11, dtype=np.float32)
    compat.load_state_dict_checked(emb_j, {"weight": eye})
    jt.set_global_seed(3)
    cls_j, bbox_j, mask_j, meta_j = jt_group(jt_t, 10, 7, emb_j)
    _, _, mask_t, meta_t = ref_group(torch_t, 10, 7, emb_t)
    np.testing.assert_array_equal(mask_j.numpy(), mask_t.numpy())
    assert meta_j["dn_num_split"] == meta_t["dn_num_split"] == [200, 7]
    labels = cls_j.numpy().argmax(-1)
    slot = np.arange(200) % 5
    for b, n in enumerate(counts):
        assert (labels[b, slot >= n] == 10).all()
        assert (labels[b, slot < n] < 10).all()
    gt = jt_t[0]["labels"].numpy()
    flipped = (labels[0, slot < 3] != np.tile(gt, 40)).mean()
    assert 0.05 < flipped < 0.5  # 25% draw a new label (which may equal the old one)
    assert np.isfinite(bbox_j.numpy()).all()
