"""Reference contrastive denoising group: group count, query count, attention-mask
pattern, positive indices, label and box noise, and the official RNG draw order,
each checked against an independent construction written here."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from rtdetr_common.noise import NumpyDenoisingNoise
from reference_pytorch.rtdetr.denoising import get_contrastive_denoising_training_group


def make_targets(counts, rng, num_classes=10, centred=False):
    targets = []
    for n in counts:
        if centred:
            cxcy = rng.uniform(0.45, 0.55, size=(n, 2))
            wh = rng.uniform(0.05, 0.2, size=(n, 2))
        else:
            cxcy = rng.uniform(0.1, 0.9, size=(n, 2))
            wh = rng.uniform(0.05, 0.6, size=(n, 2))
        targets.append({
            "labels": torch.as_tensor(rng.integers(0, num_classes, size=n), dtype=torch.int64),
            "boxes": torch.as_tensor(np.concatenate([cxcy, wh], 1), dtype=torch.float32),
        })
    return targets


def one_hot_embed(num_classes):
    """An embedding whose output is the one-hot label (so labels can be read back)."""
    emb = nn.Embedding(num_classes + 1, num_classes + 1, padding_idx=num_classes)
    with torch.no_grad():
        emb.weight.copy_(torch.eye(num_classes + 1))
    return emb


def expected_mask(max_gt, num_group, num_queries):
    """Independent construction: matching queries see no denoising query; a
    denoising group sees itself and the matching queries, not other groups."""
    n = 2 * max_gt * num_group
    m = np.zeros((n + num_queries, n + num_queries), dtype=bool)
    m[n:, :n] = True
    for g in range(num_group):
        for h in range(num_group):
            if g != h:
                m[g * 2 * max_gt:(g + 1) * 2 * max_gt, h * 2 * max_gt:(h + 1) * 2 * max_gt] = True
    return m


def expected_positive_idx(counts, max_gt, num_group):
    return [np.array([g * 2 * max_gt + j for g in range(num_group) for j in range(n)], dtype=np.int64)
            for n in counts]


def test_facts_gt_counts_3_5():
    """GT counts [3, 5] with the official formulas: 100 denoising queries // 5 = 20
    groups, 2 * 5 * 20 = 200 denoising queries, a (200 + 300)-square mask and
    dn_num_split [200, 300]."""
    rng = np.random.default_rng(0)
    targets = make_targets([3, 5], rng, num_classes=80)
    cls, bbox, mask, meta = get_contrastive_denoising_training_group(
        targets, 80, 300, nn.Embedding(81, 256, padding_idx=80), noise=NumpyDenoisingNoise(1))
    assert meta["dn_num_group"] == 20
    assert meta["dn_num_split"] == [200, 300]
    assert tuple(mask.shape) == (500, 500) and mask.dtype == torch.bool
    assert tuple(cls.shape) == (2, 200, 256) and tuple(bbox.shape) == (2, 200, 4)
    assert [len(p) for p in meta["dn_positive_idx"]] == [60, 100]
    np.testing.assert_array_equal(mask.numpy(), expected_mask(5, 20, 300))
    for got, want in zip(meta["dn_positive_idx"], expected_positive_idx([3, 5], 5, 20)):
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), want)


@settings(max_examples=15)
@given(counts=st.lists(st.integers(0, 7), min_size=1, max_size=4).filter(lambda c: max(c) > 0),
       num_denoising=st.integers(1, 40), num_queries=st.integers(1, 12), seed=st.integers(0, 2 ** 16))
def test_mask_groups_and_positive_idx(counts, num_denoising, num_queries, seed):
    rng = np.random.default_rng(seed)
    targets = make_targets(counts, rng)
    cls, bbox, mask, meta = get_contrastive_denoising_training_group(
        targets, 10, num_queries, one_hot_embed(10), num_denoising=num_denoising,
        noise=NumpyDenoisingNoise(seed))
    max_gt = max(counts)
    groups = max(1, num_denoising // max_gt)
    n = 2 * max_gt * groups
    assert meta["dn_num_group"] == groups
    assert meta["dn_num_split"] == [n, num_queries]
    assert tuple(cls.shape) == (len(counts), n, 11) and tuple(bbox.shape) == (len(counts), n, 4)
    np.testing.assert_array_equal(mask.numpy(), expected_mask(max_gt, groups, num_queries))
    for got, want in zip(meta["dn_positive_idx"], expected_positive_idx(counts, max_gt, groups)):
        np.testing.assert_array_equal(got.numpy(), want)
    # padded slots keep the padding label (no noise on them)
    labels = cls.argmax(-1).numpy()
    for b, c in enumerate(counts):
        slots = np.arange(n) % max_gt
        assert (labels[b, slots >= c] == 10).all()


class RecordingNoise(NumpyDenoisingNoise):
    """NumpyDenoisingNoise that keeps its draws for an independent recomputation."""

    def __init__(self, seed):
        super().__init__(seed)
        self.draws = {}

    def label_uniform(self, shape):
        self.draws["u"] = super().label_uniform(shape)
        return self.draws["u"]

    def new_labels(self, shape, num_classes):
        self.draws["labels"] = super().new_labels(shape, num_classes)
        return self.draws["labels"]

    def box_sign_bits(self, shape):
        self.draws["sign"] = super().box_sign_bits(shape)
        return self.draws["sign"]

    def box_uniform(self, shape):
        self.draws["mag"] = super().box_uniform(shape)
        return self.draws["mag"]


@settings(max_examples=10)
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=3).filter(lambda c: max(c) > 0),
       ratio=st.sampled_from([0.5, 1.0, 0.2]), scale=st.sampled_from([1.0, 0.4]),
       seed=st.integers(0, 2 ** 16))
def test_noise_formula(counts, ratio, scale, seed):
    """Labels and boxes recomputed in float64 NumPy from the same draws."""
    rng = np.random.default_rng(seed)
    targets = make_targets(counts, rng)
    noise = RecordingNoise(seed)
    cls, bbox, _, meta = get_contrastive_denoising_training_group(
        targets, 10, 5, one_hot_embed(10), num_denoising=12, label_noise_ratio=ratio,
        box_noise_scale=scale, noise=noise)
    max_gt, groups = max(counts), meta["dn_num_group"]
    n = 2 * max_gt * groups
    gt_labels = np.full((len(counts), max_gt), 10)
    gt_boxes = np.zeros((len(counts), max_gt, 4))
    for b, t in enumerate(targets):
        gt_labels[b, :counts[b]] = t["labels"].numpy()
        gt_boxes[b, :counts[b]] = t["boxes"].numpy()
    slot = np.arange(n)
    gt_labels, gt_boxes = gt_labels[:, slot % max_gt], gt_boxes[:, slot % max_gt]
    is_pad = (slot % max_gt)[None] >= np.array(counts)[:, None]
    negative = ((slot // max_gt) % 2 == 1)[None, :, None]

    flip = (noise.draws["u"] < ratio * 0.5) & ~is_pad
    want_labels = np.where(flip, noise.draws["labels"], gt_labels)
    np.testing.assert_array_equal(cls.argmax(-1).numpy(), want_labels)

    half_wh = np.concatenate([gt_boxes[..., 2:], gt_boxes[..., 2:]], -1) * 0.5 * scale
    magnitude = noise.draws["mag"].astype(np.float64) + negative  # positives [0,1), negatives [1,2)
    sign = noise.draws["sign"].astype(np.float64) * 2 - 1
    xyxy = np.concatenate([gt_boxes[..., :2] - gt_boxes[..., 2:] / 2, gt_boxes[..., :2] + gt_boxes[..., 2:] / 2], -1)
    xyxy = np.clip(xyxy + magnitude * sign * half_wh, 0, 1)
    cxcywh = np.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)
    cxcywh = np.clip(cxcywh, 0, 1)
    want_bbox = np.log(np.maximum(cxcywh, 1e-5) / np.maximum(1 - cxcywh, 1e-5))
    # float32 pipeline vs float64 recomputation, over 300 random cases: as boxes
    # (sigmoid) max 1.3e-7 -> atol 1e-6; as logits max 7.6e-6 where |logit| < 5 ->
    # 2e-5 (near-degenerate widths amplify float32 cancellation through the log).
    np.testing.assert_allclose(1 / (1 + np.exp(-bbox.double().numpy())), 1 / (1 + np.exp(-want_bbox)),
                               atol=1e-6, rtol=0)
    assert np.abs(bbox.numpy() - want_bbox)[np.abs(want_bbox) < 5].max(initial=0) < 2e-5


def test_positive_and_negative_noise_ranges():
    """Positive queries move each corner by less than half the box size, negatives by
    half to one box size (no clipping: small centred boxes)."""
    rng = np.random.default_rng(3)
    targets = make_targets([4, 2], rng, centred=True)
    _, bbox, _, meta = get_contrastive_denoising_training_group(
        targets, 10, 5, one_hot_embed(10), num_denoising=40, noise=NumpyDenoisingNoise(5))
    boxes = torch.sigmoid(bbox).double().numpy()
    xyxy = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)
    checked = 0
    for b, t in enumerate(targets):
        gt = t["boxes"].double().numpy()
        gt_xyxy = np.concatenate([gt[:, :2] - gt[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2], -1)
        half = np.concatenate([gt[:, 2:], gt[:, 2:]], -1) / 2
        for g in range(meta["dn_num_group"]):
            pos = xyxy[b, g * 8:g * 8 + len(gt)]
            neg = xyxy[b, g * 8 + 4:g * 8 + 4 + len(gt)]
            # a negative whose corners cross has width/height clamped to 0 by the
            # inverse sigmoid (official behaviour); only intact boxes are checked
            intact = ((neg[:, 2:] - neg[:, :2]) > 1e-3).all(-1)
            rel_pos = np.abs(pos - gt_xyxy) / half
            rel_neg = np.abs(neg - gt_xyxy)[intact] / half[intact]
            assert rel_pos.max() < 1 + 1e-4
            assert rel_neg.min(initial=2) > 1 - 1e-4 and rel_neg.max(initial=1) < 2 + 1e-4
            checked += len(rel_neg)
    assert checked >= 20


class FixedDraws:
    """Returns pre-drawn tensors, to replay the official calls."""

    def __init__(self, draws):
        self.draws = draws

    def label_uniform(self, shape):
        assert tuple(self.draws[0].shape) == tuple(shape)
        return self.draws[0]

    def new_labels(self, shape, num_classes):
        return self.draws[1]

    def box_sign_bits(self, shape):
        assert tuple(self.draws[2].shape) == tuple(shape)
        return self.draws[2]

    def box_uniform(self, shape):
        return self.draws[3]


@pytest.mark.parametrize("counts", [[3, 5], [0, 2, 1], [7]])
def test_default_noise_reproduces_official_draws(counts):
    """noise=None consumes torch's global RNG exactly as the official code's
    ``rand_like`` / ``randint_like`` calls (replayed here by hand)."""
    rng = np.random.default_rng(11)
    targets = make_targets(counts, rng)
    emb = one_hot_embed(10)  # built before seeding: its init draws from the same RNG
    torch.manual_seed(1234)
    cls_a, bbox_a, _, meta = get_contrastive_denoising_training_group(targets, 10, 5, emb)
    after_a = torch.rand(3)

    n = meta["dn_num_split"][0]
    torch.manual_seed(1234)
    like_class = torch.zeros(len(counts), n, dtype=torch.int32)
    like_bbox = torch.zeros(len(counts), n, 4)
    u = torch.rand_like(like_class, dtype=torch.float)
    mask = u < 0.25
    labels = torch.randint_like(mask, 0, 10, dtype=torch.int32)
    sign = torch.randint_like(like_bbox, 0, 2)
    mag = torch.rand_like(like_bbox)
    after_b = torch.rand(3)
    cls_b, bbox_b, _, _ = get_contrastive_denoising_training_group(
        targets, 10, 5, emb, noise=FixedDraws([u, labels, sign, mag]))

    torch.testing.assert_close(after_a, after_b, rtol=0, atol=0)
    torch.testing.assert_close(cls_a, cls_b, rtol=0, atol=0)
    torch.testing.assert_close(bbox_a, bbox_b, rtol=0, atol=0)


def test_no_ground_truth():
    emb = one_hot_embed(10)
    rng = np.random.default_rng(0)
    assert get_contrastive_denoising_training_group(make_targets([0, 0], rng), 10, 5, emb) == (None,) * 4
    assert get_contrastive_denoising_training_group(make_targets([2], rng), 10, 5, emb, num_denoising=0) \
        == (None,) * 4
    cls, bbox, mask, meta = get_contrastive_denoising_training_group(
        make_targets([0, 2], rng), 10, 5, emb, num_denoising=10, noise=NumpyDenoisingNoise(0))
    assert meta["dn_num_group"] == 5 and meta["dn_num_split"] == [20, 5]
    assert len(meta["dn_positive_idx"][0]) == 0
    np.testing.assert_array_equal(meta["dn_positive_idx"][1].numpy(), [0, 1, 4, 5, 8, 9, 12, 13, 16, 17])
    assert (cls[0].argmax(-1) == 10).all()
    assert torch.isfinite(bbox).all()


def test_more_ground_truth_than_denoising_queries():
    rng = np.random.default_rng(0)
    cls, _, mask, meta = get_contrastive_denoising_training_group(
        make_targets([30, 1], rng), 10, 5, one_hot_embed(10), num_denoising=20, noise=NumpyDenoisingNoise(0))
    assert meta["dn_num_group"] == 1 and meta["dn_num_split"] == [60, 5]
    np.testing.assert_array_equal(mask.numpy(), expected_mask(30, 1, 5))


def test_no_box_noise_leaves_boxes_unactivated():
    """Official quirk: with box_noise_scale 0 the boxes are returned as given (cxcywh,
    not inverse-sigmoided), and with label_noise_ratio 0 no label is changed."""
    rng = np.random.default_rng(0)
    targets = make_targets([2, 1], rng)
    cls, bbox, _, meta = get_contrastive_denoising_training_group(
        targets, 10, 5, one_hot_embed(10), num_denoising=4, label_noise_ratio=0.0, box_noise_scale=0.0)
    assert meta["dn_num_group"] == 2
    np.testing.assert_array_equal(bbox[0, :2].numpy(), targets[0]["boxes"].numpy())
    np.testing.assert_array_equal(cls[0, :2].argmax(-1).numpy(), targets[0]["labels"].numpy())
    assert math.isclose(float(bbox[1, 1].abs().sum()), 0.0)
