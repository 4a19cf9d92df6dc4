"""Checks at the boundary between user data and the models, written once for both twins.

- ``validate_images``: a training batch is a finite float (B, 3, H, W) array.
- ``validate_targets``: training targets (per image ``labels`` and ``boxes``) hold
  class ids in ``[0, num_classes)`` and finite boxes in the expected format; raises
  ``TargetError`` with one line naming the image, the entry and the value. Without it
  the Jittor twin reads its class embedding out of range and trains on NaN.
- ``check_finite_loss``: a NaN or infinite loss or gradient norm raises
  ``NonFiniteLossError`` naming the loss terms, before the weights change (the Jittor
  twin, compiled with -ffast-math, turned NaN images into a finite loss and NaN
  gradients, and so NaN weights).
- ``check_finite_outputs``: NaN or inf in the model's outputs raise
  ``NonFiniteLossError`` before the loss, where the official matcher would stop on a
  bare ``AssertionError``.
"""
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError, NonFiniteLossError, TargetError

BOX_FORMATS = ("cxcywh", "xyxy")
# how far normalized cxcywh values may stray outside [0, 1] through float rounding
NORMALIZED_SLACK = 1e-3


def _as_array(value):
    """A NumPy array from an array, a torch tensor or a Jittor Var."""
    if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):
        value = (value.detach() if hasattr(value, "detach") else value).numpy()
    return np.asarray(value)


def _labels(i, target, num_classes):
    labels = _as_array(target["labels"])
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise TargetError(f"targets[{i}]['labels'] must be a 1-D array of integer class ids, "
                          f"got dtype {labels.dtype} and shape {labels.shape}")
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        j = int(outside[0])
        raise TargetError(f"targets[{i}]['labels'][{j}] = {int(labels[j])} is outside [0, num_classes={num_classes}) "
                          f"({outside.size} such label(s) in this image)")
    return labels


def _box_problem(boxes, box_format):
    """Per box, True where it is not in ``box_format``."""
    if box_format == "xyxy":
        return (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    outside = (boxes < -NORMALIZED_SLACK) | (boxes > 1 + NORMALIZED_SLACK)
    return outside.any(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)


FORMAT_RULES = {"cxcywh": "normalized cxcywh (values in [0, 1], width and height >= 0)",
                "xyxy": "xyxy with x2 >= x1 and y2 >= y1"}


def _boxes(i, target, count, box_format):
    boxes = _as_array(target["boxes"])
    if boxes.size == 0 and count == 0:
        return
    if boxes.dtype == bool or not np.issubdtype(boxes.dtype, np.number) or boxes.shape != (count, 4):
        raise TargetError(f"targets[{i}]['boxes'] must be a numeric ({count}, 4) array (one box per label), "
                          f"got dtype {boxes.dtype} and shape {boxes.shape}")
    boxes = boxes.astype(np.float64)
    bad = ~np.isfinite(boxes).all(axis=1)
    rule = "finite"
    if not bad.any():
        bad, rule = _box_problem(boxes, box_format), FORMAT_RULES[box_format]
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise TargetError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} is not {rule} "
                          f"({int(bad.sum())} such box(es) in this image)")


def validate_images(images):
    """Raise ``InputError`` unless ``images`` is a finite float batch of shape (B, 3, H, W)."""
    images = _as_array(images)
    if images.ndim != 4 or images.shape[1] != 3 or not np.issubdtype(images.dtype, np.floating):
        raise InputError(f"images must be a float (batch, 3, height, width) array, got dtype {images.dtype} "
                         f"and shape {images.shape}")
    if not np.isfinite(images).all():
        raise InputError(f"images hold {int((~np.isfinite(images)).sum())} NaN or infinite value(s)")


def validate_targets(targets, num_classes, box_format="cxcywh"):
    """Raise ``TargetError`` unless every target is a mapping with integer ``labels`` in
    ``[0, num_classes)`` and one finite box per label in ``box_format`` ("cxcywh":
    normalized, as the models train on; "xyxy": corners in any unit). Arrays, torch
    tensors and Jittor Vars are accepted."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
    if isinstance(targets, (str, bytes, Mapping)) or not isinstance(targets, Sequence):
        raise TargetError(f"targets must be a list with one dict per image, got {type(targets).__name__}")
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping) or not {"labels", "boxes"} <= set(target):
            found = sorted(map(str, target)) if isinstance(target, Mapping) else type(target).__name__
            raise TargetError(f"targets[{i}] must be a dict with 'labels' and 'boxes', got {found}")
        labels = _labels(i, target, num_classes)
        _boxes(i, target, len(labels), box_format)


def check_finite_loss(loss, losses, grad_norm=0.0):
    """Raise ``NonFiniteLossError`` naming the terms if the total ``loss`` or the gradient norm is not finite."""
    if np.isfinite(loss) and np.isfinite(grad_norm):
        return
    bad = [k for k, v in losses.items() if not np.isfinite(v)]
    what = f"non-finite loss {loss}" if not np.isfinite(loss) else f"non-finite gradient norm {grad_norm} (loss {loss})"
    terms = ", ".join(f"{k}={v:.6g}" for k, v in losses.items())
    raise NonFiniteLossError(f"{what}: non-finite terms {bad}; all terms: {terms}", losses)


def check_finite_outputs(outputs):
    """Raise ``NonFiniteLossError`` if the model's ``pred_logits`` or ``pred_boxes`` hold NaN or inf."""
    bad = [k for k in ("pred_logits", "pred_boxes") if k in outputs and not np.isfinite(_as_array(outputs[k])).all()]
    if bad:
        raise NonFiniteLossError(f"non-finite model outputs ({' and '.join(bad)} hold NaN or inf), "
                                 "so no loss terms were computed")
