"""Box-only transforms: SanitizeBoundingBox (drop degenerate boxes with their
labels) and ConvertBox (change box format, optionally normalise by image size)."""
import numpy as np

from .box_ops import xyxy_to_cxcywh, xyxy_to_xywh
from .op_base import Transform, has_boxes, image_size, select_boxes, with_boxes

BOX_CONVERTERS = {
    "xyxy": lambda boxes: boxes,
    "xywh": xyxy_to_xywh,
    "cxcywh": xyxy_to_cxcywh,
}


class SanitizeBoundingBox(Transform):
    """Keep boxes at least ``min_size`` wide and high that lie inside the image;
    drop the others together with their labels, areas and crowd flags."""

    touches_boxes = True

    def __init__(self, min_size=1):
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        self.min_size = float(min_size)

    def valid_mask(self, boxes, width, height):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        valid = (widths >= self.min_size) & (heights >= self.min_size) & (boxes >= 0).all(axis=1)
        valid &= (boxes[:, 0] <= width) & (boxes[:, 2] <= width)
        valid &= (boxes[:, 1] <= height) & (boxes[:, 3] <= height)
        return valid

    def __call__(self, image, target, rng=None):
        if not has_boxes(target):
            return image, target
        width, height = image_size(image)
        return image, select_boxes(target, self.valid_mask(target["boxes"], width, height))


class ConvertBox(Transform):
    """Convert xyxy pixel boxes to ``out_fmt`` ('xyxy', 'xywh' or 'cxcywh'; ''
    keeps xyxy) and, with ``normalize``, divide by [w, h, w, h] of the image.
    No transform that touches boxes may follow it."""

    touches_boxes = True

    def __init__(self, out_fmt="", normalize=False):
        out_fmt = out_fmt or "xyxy"
        if out_fmt not in BOX_CONVERTERS:
            raise ValueError(f"out_fmt must be one of {sorted(BOX_CONVERTERS)}, got {out_fmt!r}")
        self.out_fmt = out_fmt
        self.normalize = bool(normalize)

    def __call__(self, image, target, rng=None):
        if not has_boxes(target):
            return image, target
        boxes = BOX_CONVERTERS[self.out_fmt](np.asarray(target["boxes"], dtype=np.float32))
        if self.normalize:
            width, height = image_size(image)
            boxes = boxes / np.float32([width, height, width, height])
        return image, with_boxes(target, boxes)
