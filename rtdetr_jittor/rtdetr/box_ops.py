"""Box format conversions, pairwise IoU and generalized IoU (the official DETR
formulas used by RT-DETR's matcher and criterion).

Boxes are ``(..., 4)`` Vars; ``cxcywh`` is (centre x, centre y, width, height) and
``xyxy`` is (x0, y0, x1, y1). ``box_area`` follows torchvision's formula.
Jittor twin of ``reference_pytorch/rtdetr/box_ops.py``: element-wise max/min and
clamp go through ``compat`` so gradients at ties (identical or touching boxes) are
torch's (split 0.5/0.5 between equal arguments; 1 at the clamp bound).
"""
from rtdetr_jittor._env import jt

from rtdetr_jittor.compat import clamp, maximum, minimum


def box_cxcywh_to_xyxy(x):
    """(cx, cy, w, h) -> (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    x_c, y_c, w, h = x.unbind(-1)
    b = [(x_c - 0.5 * w), (y_c - 0.5 * h),
         (x_c + 0.5 * w), (y_c + 0.5 * h)]
    return jt.stack(b, dim=-1)


def box_xyxy_to_cxcywh(x):
    """(x0, y0, x1, y1) -> ((x0 + x1)/2, (y0 + y1)/2, x1 - x0, y1 - y0)."""
    x0, y0, x1, y1 = x.unbind(-1)
    b = [(x0 + x1) / 2, (y0 + y1) / 2,
         (x1 - x0), (y1 - y0)]
    return jt.stack(b, dim=-1)


def box_area(boxes):
    """Area of (N, 4) xyxy boxes (torchvision.ops.box_area)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes: ``(iou, union)``, each (N, M)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)

    lt = maximum(boxes1[:, None, :2], boxes2[:, :2])  # (N, M, 2)
    rb = minimum(boxes1[:, None, 2:], boxes2[:, 2:])  # (N, M, 2)

    wh = clamp(rb - lt, min=0)  # (N, M, 2)
    inter = wh[:, :, 0] * wh[:, :, 1]  # (N, M)

    union = area1[:, None] + area2 - inter

    iou = inter / union
    return iou, union


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalized IoU (https://giou.stanford.edu/) of xyxy boxes, (N, M).

    As the official code, fails (AssertionError) unless every box has x1 >= x0 and
    y1 >= y0 (so NaN coordinates fail too): degenerate boxes would give inf/NaN.
    """
    assert _all(boxes1[:, 2:] >= boxes1[:, :2])
    assert _all(boxes2[:, 2:] >= boxes2[:, :2])
    iou, union = box_iou(boxes1, boxes2)

    lt = minimum(boxes1[:, None, :2], boxes2[:, :2])
    rb = maximum(boxes1[:, None, 2:], boxes2[:, 2:])

    wh = clamp(rb - lt, min=0)  # (N, M, 2)
    area = wh[:, :, 0] * wh[:, :, 1]

    return iou - (area - union) / area


def _all(cond):
    """``cond.all()`` as a Python bool (True for an empty Var, as torch)."""
    return bool(cond.numpy().all())
