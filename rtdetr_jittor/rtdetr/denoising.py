"""Contrastive denoising (CDN) training group of RT-DETR, Jittor twin.

``get_contrastive_denoising_training_group`` builds, from the ground truth of a
batch, the noised label/box queries that are prepended to the decoder's matching
queries, the self-attention mask that keeps groups (and the matching part) apart,
and ``dn_meta`` for the criterion. The noise comes from a noise source object
(``label_uniform``, ``new_labels``, ``box_sign_bits``, ``box_uniform``, drawn in that
order); the default ``JittorDenoisingNoise`` uses Jittor's global RNG (the harness
sets a ``rtdetr_common.noise.NumpyDenoisingNoise`` to feed both twins the same
draws). A batch in which no image has ground truth returns ``(None,) * 4``.

Framework differences: the padding, masks and positive indices are discrete
host-side bookkeeping and are built in NumPy; the box noise is computed with Jittor
ops as in the reference.
"""
import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common import probes
from rtdetr_jittor.compat import clamp, to_numpy

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .utils import inverse_sigmoid


class JittorDenoisingNoise:
    """Denoising noise from Jittor's global RNG (same distributions and dtypes as the
    reference's ``TorchDenoisingNoise``; the streams differ)."""

    def label_uniform(self, shape):
        return jt.rand(shape, dtype="float32", requires_grad=False)

    def new_labels(self, shape, num_classes):
        return jt.randint(0, num_classes, shape, dtype="int32")

    def box_sign_bits(self, shape):
        return jt.randint(0, 2, shape, dtype="float32")

    def box_uniform(self, shape):
        return jt.rand(shape, dtype="float32", requires_grad=False)


def _as_tensor(value, dtype):
    """A noise draw (Var or NumPy array) as a Var of ``dtype`` (Jittor's tensor)."""
    if isinstance(value, jt.Var):
        return value.astype(dtype)
    return jt.array(np.asarray(value)).astype(dtype)


def get_contrastive_denoising_training_group(targets, num_classes, num_queries, class_embed,
                                             num_denoising=100, label_noise_ratio=0.5,
                                             box_noise_scale=1.0, noise=None):
    """Returns ``(input_query_class, input_query_bbox, attn_mask, dn_meta)``.

    ``input_query_class``: (B, N, hidden) embedded noised labels; ``input_query_bbox``:
    (B, N, 4) noised boxes, unactivated (inverse sigmoid of cxcywh); ``attn_mask``:
    (N + num_queries)^2 bool, True = may not attend; ``dn_meta``: ``dn_positive_idx``
    (tuple of per-image int64 Vars, the positive queries' indices), ``dn_num_group``,
    ``dn_num_split`` = [N, num_queries]. ``(None,) * 4`` when denoising is off or the
    batch holds no ground truth at all.
    """
    if num_denoising <= 0:
        return None, None, None, None

    num_gts = [len(t["labels"]) for t in targets]

    max_gt_num = max(num_gts)
    if max_gt_num == 0:
        return None, None, None, None

    if noise is None:
        noise = JittorDenoisingNoise()

    num_group = num_denoising // max_gt_num
    num_group = 1 if num_group == 0 else num_group
    # pad gt to max_num of a batch
    bs = len(num_gts)

    input_query_class = np.full([bs, max_gt_num], num_classes, dtype=np.int32)
    input_query_bbox = np.zeros([bs, max_gt_num, 4], dtype=np.float32)
    pad_gt_mask = np.zeros([bs, max_gt_num], dtype=bool)

    for i in range(bs):
        num_gt = num_gts[i]
        if num_gt > 0:
            input_query_class[i, :num_gt] = to_numpy(targets[i]["labels"]).reshape(-1)
            input_query_bbox[i, :num_gt] = to_numpy(targets[i]["boxes"]).reshape(-1, 4)
            pad_gt_mask[i, :num_gt] = 1
    # each group has positive and negative queries
    input_query_class = np.tile(input_query_class, [1, 2 * num_group])
    input_query_bbox = np.tile(input_query_bbox, [1, 2 * num_group, 1])
    pad_gt_mask = np.tile(pad_gt_mask, [1, 2 * num_group])
    # positive and negative mask
    negative_gt_mask = np.zeros([bs, max_gt_num * 2, 1], dtype=np.float32)
    negative_gt_mask[:, max_gt_num:] = 1
    negative_gt_mask = np.tile(negative_gt_mask, [1, num_group, 1])
    positive_gt_mask = 1 - negative_gt_mask
    # contrastive denoising training positive index
    positive_gt_mask = positive_gt_mask.squeeze(-1) * pad_gt_mask
    dn_positive_idx = np.nonzero(positive_gt_mask)[1].astype(np.int64)
    dn_positive_idx = np.split(dn_positive_idx, np.cumsum([n * num_group for n in num_gts])[:-1])
    dn_positive_idx = tuple(jt.array(idx).int64() for idx in dn_positive_idx)
    # total denoising queries
    num_denoising = int(max_gt_num * 2 * num_group)

    input_query_class = jt.array(input_query_class).int32()
    input_query_bbox = jt.array(input_query_bbox)
    pad_gt_mask = jt.array(pad_gt_mask)
    negative_gt_mask = jt.array(negative_gt_mask)

    if label_noise_ratio > 0:
        mask = _as_tensor(noise.label_uniform(tuple(input_query_class.shape)), jt.float32) \
            < (label_noise_ratio * 0.5)
        # randomly put a new one here
        new_label = _as_tensor(noise.new_labels(tuple(mask.shape), num_classes), input_query_class.dtype)
        input_query_class = jt.where(mask & pad_gt_mask, new_label, input_query_class)

    if box_noise_scale > 0:
        known_bbox = box_cxcywh_to_xyxy(input_query_bbox)
        diff = (input_query_bbox[..., 2:] * 0.5).repeat(1, 1, 2) * box_noise_scale
        rand_sign = _as_tensor(noise.box_sign_bits(tuple(input_query_bbox.shape)), input_query_bbox.dtype) \
            * 2.0 - 1.0
        rand_part = _as_tensor(noise.box_uniform(tuple(input_query_bbox.shape)), input_query_bbox.dtype)
        rand_part = (rand_part + 1.0) * negative_gt_mask + rand_part * (1 - negative_gt_mask)
        rand_part = rand_part * rand_sign
        known_bbox = known_bbox + rand_part * diff
        known_bbox = clamp(known_bbox, min=0.0, max=1.0)
        input_query_bbox = box_xyxy_to_cxcywh(known_bbox)
        input_query_bbox = inverse_sigmoid(input_query_bbox)

    input_query_class = class_embed(input_query_class)

    tgt_size = num_denoising + num_queries
    attn_mask = np.full([tgt_size, tgt_size], False, dtype=bool)
    # match query cannot see the reconstruction
    attn_mask[num_denoising:, :num_denoising] = True

    # reconstruct cannot see each other
    for i in range(num_group):
        if i == 0:
            attn_mask[max_gt_num * 2 * i: max_gt_num * 2 * (i + 1), max_gt_num * 2 * (i + 1): num_denoising] = True
        if i == num_group - 1:
            attn_mask[max_gt_num * 2 * i: max_gt_num * 2 * (i + 1), :max_gt_num * i * 2] = True
        else:
            attn_mask[max_gt_num * 2 * i: max_gt_num * 2 * (i + 1), max_gt_num * 2 * (i + 1): num_denoising] = True
            attn_mask[max_gt_num * 2 * i: max_gt_num * 2 * (i + 1), :max_gt_num * 2 * i] = True
    attn_mask = jt.array(attn_mask)

    dn_meta = {
        "dn_positive_idx": dn_positive_idx,
        "dn_num_group": num_group,
        "dn_num_split": [num_denoising, num_queries],
    }

    probes.record("decoder.dn.input_query_class", input_query_class)
    input_query_bbox = probes.decide("decoder.dn.input_query_bbox", input_query_bbox)
    probes.record("decoder.dn.attn_mask", attn_mask)

    return input_query_class, input_query_bbox, attn_mask, dn_meta
