"""The interface every data transform implements, and helpers the transforms share.

A transform is called as ``op(image, target, rng)`` and returns ``(image, target)``.
``image`` is a PIL RGB image until ``ToImageTensor`` turns it into a CHW NumPy
array. ``target`` is ``None`` or a dict of NumPy arrays whose ``boxes`` are xyxy in
absolute pixels of the current image (until ``ConvertBox`` changes that). Ops never
modify the dict they are given; they return a new one. All randomness comes from
``rng``, a ``numpy.random.Generator``.
"""
import numpy as np
from PIL import Image

# Target entries that hold one row per box and must be filtered together with it.
PER_BOX_KEYS = ("boxes", "labels", "area", "iscrowd")


class Transform:
    """Base class. Subclasses set the class flags and implement ``__call__``."""

    is_random = False       # draws from rng
    touches_boxes = False   # reads or rewrites target["boxes"] as xyxy pixels
    needs_pil = False       # only works before ToImageTensor

    def __call__(self, image, target, rng):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def image_size(image):
    """(width, height) of a PIL image or a CHW array."""
    if isinstance(image, Image.Image):
        return image.size
    array = np.asarray(image)
    if array.ndim != 3:
        raise TypeError(f"expected a PIL image or a CHW array, got shape {array.shape}")
    return array.shape[2], array.shape[1]


def require_pil(image, op_name):
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"{op_name} works on PIL images; put it before ToImageTensor "
            f"(got {type(image).__name__})"
        )


def has_boxes(target):
    return target is not None and "boxes" in target


def with_boxes(target, boxes):
    """A copy of ``target`` with ``boxes`` replaced (kept float32)."""
    out = dict(target)
    out["boxes"] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return out


def select_boxes(target, keep):
    """A copy of ``target`` keeping only the boxes (and their per-box rows) in ``keep``."""
    out = dict(target)
    for key in PER_BOX_KEYS:
        if key in out:
            out[key] = np.asarray(out[key])[keep]
    return out


def check_probability(p, name="p"):
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)
