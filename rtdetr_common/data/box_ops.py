"""NumPy bounding-box helpers: format conversion, clipping and IoU.

Boxes are (N, 4) arrays. ``xyxy`` is (x1, y1, x2, y2), ``xywh`` is COCO's
(x, y, width, height) and ``cxcywh`` is (centre x, centre y, width, height).
"""
import numpy as np


def xywh_to_xyxy(boxes):
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes):
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xyxy_to_cxcywh(boxes):
    boxes = np.asarray(boxes)
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def cxcywh_to_xyxy(boxes):
    boxes = np.asarray(boxes)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def clip_xyxy(boxes, width, height):
    """Clamp xyxy boxes into the [0, width] x [0, height] canvas."""
    boxes = np.array(boxes, copy=True)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def box_iou_xyxy(boxes_a, boxes_b):
    """Pairwise IoU, shape (len(boxes_a), len(boxes_b)); empty boxes give 0."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64)
    boxes_b = np.asarray(boxes_b, dtype=np.float64)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None), axis=1)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
