"""Contrastive denoising (CDN) training group of RT-DETR, PyTorch reference.

``get_contrastive_denoising_training_group`` builds, from the ground truth of a
batch, the noised label/box queries that are prepended to the decoder's matching
queries, the self-attention mask that keeps groups (and the matching part) apart,
and ``dn_meta`` for the criterion. The noise comes from a noise source object
(``label_uniform``, ``new_labels``, ``box_sign_bits``, ``box_uniform``, drawn in that
order); the default ``TorchDenoisingNoise`` reproduces the official draws from
torch's global RNG exactly. A batch in which no image has ground truth returns
``(None,) * 4``, as the official code's ``max_gt_num == 0`` branch does.
"""
import numpy as np
import torch

from rtdetr_common import probes

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .utils import inverse_sigmoid


class TorchDenoisingNoise:
    """Denoising noise from torch's global RNG, drawn exactly as the official code
    does (``rand_like`` / ``randint_like`` on the query tensors, same dtypes, same
    device, same order)."""

    def __init__(self, device=None):
        self.device = torch.device("cpu") if device is None else device

    def label_uniform(self, shape):
        return torch.rand(shape, dtype=torch.float, device=self.device)

    def new_labels(self, shape, num_classes):
        return torch.randint(0, num_classes, shape, dtype=torch.int32, device=self.device)

    def box_sign_bits(self, shape):
        return torch.randint(0, 2, shape, dtype=torch.float32, device=self.device)

    def box_uniform(self, shape):
        return torch.rand(shape, dtype=torch.float32, device=self.device)


def _as_tensor(value, dtype, device):
    """A noise draw (tensor or NumPy array) as a tensor of ``dtype`` on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


def get_contrastive_denoising_training_group(targets, num_classes, num_queries, class_embed,
                                             num_denoising=100, label_noise_ratio=0.5,
                                             box_noise_scale=1.0, noise=None):
    """Returns ``(input_query_class, input_query_bbox, attn_mask, dn_meta)``.

    ``input_query_class``: (B, N, hidden) embedded noised labels; ``input_query_bbox``:
    (B, N, 4) noised boxes, unactivated (inverse sigmoid of cxcywh); ``attn_mask``:
    (N + num_queries)^2 bool, True = may not attend; ``dn_meta``: ``dn_positive_idx``
    (per image int64 indices of the positive queries), ``dn_num_group``,
    ``dn_num_split`` = [N, num_queries]. ``(None,) * 4`` when denoising is off or the
    batch holds no ground truth at all.
    """
    if num_denoising <= 0:
        return None, None, None, None

    num_gts = [len(t["labels"]) for t in targets]
    device = targets[0]["labels"].device

    max_gt_num = max(num_gts)
    if max_gt_num == 0:
        return None, None, None, None

    if noise is None:
        noise = TorchDenoisingNoise(device)

    num_group = num_denoising // max_gt_num
    num_group = 1 if num_group == 0 else num_group
    # pad gt to max_num of a batch
    bs = len(num_gts)

    input_query_class = torch.full([bs, max_gt_num], num_classes, dtype=torch.int32, device=device)
    input_query_bbox = torch.zeros([bs, max_gt_num, 4], device=device)
    pad_gt_mask = torch.zeros([bs, max_gt_num], dtype=torch.bool, device=device)

    for i in range(bs):
        num_gt = num_gts[i]
        if num_gt > 0:
            input_query_class[i, :num_gt] = targets[i]["labels"]
            input_query_bbox[i, :num_gt] = targets[i]["boxes"]
            pad_gt_mask[i, :num_gt] = 1
    # each group has positive and negative queries
    input_query_class = input_query_class.tile([1, 2 * num_group])
    input_query_bbox = input_query_bbox.tile([1, 2 * num_group, 1])
    pad_gt_mask = pad_gt_mask.tile([1, 2 * num_group])
    # positive and negative mask
    negative_gt_mask = torch.zeros([bs, max_gt_num * 2, 1], device=device)
    negative_gt_mask[:, max_gt_num:] = 1
    negative_gt_mask = negative_gt_mask.tile([1, num_group, 1])
    positive_gt_mask = 1 - negative_gt_mask
    # contrastive denoising training positive index
    positive_gt_mask = positive_gt_mask.squeeze(-1) * pad_gt_mask
    dn_positive_idx = torch.nonzero(positive_gt_mask)[:, 1]
    dn_positive_idx = torch.split(dn_positive_idx, [n * num_group for n in num_gts])
    # total denoising queries
    num_denoising = int(max_gt_num * 2 * num_group)

    if label_noise_ratio > 0:
        mask = _as_tensor(noise.label_uniform(tuple(input_query_class.shape)), torch.float, device) \
            < (label_noise_ratio * 0.5)
        # randomly put a new one here
        new_label = _as_tensor(noise.new_labels(tuple(mask.shape), num_classes), input_query_class.dtype, device)
        input_query_class = torch.where(mask & pad_gt_mask, new_label, input_query_class)

    if box_noise_scale > 0:
        known_bbox = box_cxcywh_to_xyxy(input_query_bbox)
        diff = torch.tile(input_query_bbox[..., 2:] * 0.5, [1, 1, 2]) * box_noise_scale
        rand_sign = _as_tensor(noise.box_sign_bits(tuple(input_query_bbox.shape)), input_query_bbox.dtype, device) \
            * 2.0 - 1.0
        rand_part = _as_tensor(noise.box_uniform(tuple(input_query_bbox.shape)), input_query_bbox.dtype, device)
        rand_part = (rand_part + 1.0) * negative_gt_mask + rand_part * (1 - negative_gt_mask)
        rand_part *= rand_sign
        known_bbox += rand_part * diff
        known_bbox.clip_(min=0.0, max=1.0)
        input_query_bbox = box_xyxy_to_cxcywh(known_bbox)
        input_query_bbox = inverse_sigmoid(input_query_bbox)

    input_query_class = class_embed(input_query_class)

    tgt_size = num_denoising + num_queries
    attn_mask = torch.full([tgt_size, tgt_size], False, dtype=torch.bool, device=device)
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

    dn_meta = {
        "dn_positive_idx": dn_positive_idx,
        "dn_num_group": num_group,
        "dn_num_split": [num_denoising, num_queries],
    }

    probes.record("decoder.dn.input_query_class", input_query_class)
    input_query_bbox = probes.decide("decoder.dn.input_query_bbox", input_query_bbox)
    probes.record("decoder.dn.attn_mask", attn_mask)

    return input_query_class, input_query_bbox, attn_mask, dn_meta
