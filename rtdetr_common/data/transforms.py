"""Build the data transform pipeline from the official config's ``ops`` list.

``Compose(ops)`` takes a list of ``{type: Name, **kwargs}`` dicts (or transform
objects) and is called as ``compose(image, target, rng)``; every random decision
is drawn from ``rng`` (a ``numpy.random.Generator``), so a given generator state
always gives the same output.
"""
import copy

import numpy as np

from .box_transforms import ConvertBox, SanitizeBoundingBox
from .geometric import RandomHorizontalFlip, RandomIoUCrop, RandomZoomOut, Resize
from .op_base import Transform
from .photometric import RandomPhotometricDistort
from .tensor_conversion import ConvertDtype, ToImageTensor

TRANSFORMS = {
    cls.__name__: cls
    for cls in (
        RandomPhotometricDistort,
        RandomZoomOut,
        RandomIoUCrop,
        SanitizeBoundingBox,
        RandomHorizontalFlip,
        Resize,
        ToImageTensor,
        ConvertDtype,
        ConvertBox,
    )
}


def build_transform(spec):
    """One transform from a ``{type: Name, **kwargs}`` dict (or a Transform as-is)."""
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"a transform spec must be a dict with a 'type' key, got {spec!r}")
    kwargs = copy.deepcopy(spec)
    name = kwargs.pop("type")
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    try:
        return TRANSFORMS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for {name}: {error}") from error


def _check_order(ops):
    """Reject orders that cannot work: PIL-only ops after ToImageTensor, box ops after ConvertBox."""
    converted_image = converted_boxes = False
    for op in ops:
        name = type(op).__name__
        if op.needs_pil and converted_image:
            raise ValueError(f"{name} works on PIL images and cannot follow ToImageTensor")
        if op.touches_boxes and converted_boxes:
            raise ValueError(f"{name} expects xyxy pixel boxes and cannot follow ConvertBox")
        converted_image |= isinstance(op, ToImageTensor)
        converted_boxes |= isinstance(op, ConvertBox)


class Compose(Transform):
    """Apply ``ops`` in order. ``ops=None`` (as in an empty config) is the identity."""

    def __init__(self, ops=None):
        self.ops = [build_transform(spec) for spec in (ops or [])]
        _check_order(self.ops)
        self.is_random = any(op.is_random for op in self.ops)

    def __call__(self, image, target=None, rng=None):
        if self.is_random and not isinstance(rng, np.random.Generator):
            raise ValueError("this pipeline is random: pass rng=numpy.random.Generator")
        for op in self.ops:
            image, target = op(image, target, rng)
        return image, target

    def __repr__(self):
        inner = "".join(f"\n  {op!r}," for op in self.ops)
        return f"Compose([{inner}\n])"


def build_transforms(config):
    """A Compose from a dataset's ``transforms`` config section (``{ops: [...]}``),
    a bare ops list, or ``None``."""
    if config is None or isinstance(config, list):
        return Compose(config)
    if isinstance(config, dict):
        kind = config.get("type", "Compose")
        if kind != "Compose":
            raise ValueError(f"transforms section must be a Compose, got type {kind!r}")
        return Compose(config.get("ops"))
    raise ValueError(f"cannot build transforms from {config!r}")
