"""Colour augmentation: RandomPhotometricDistort with torchvision v2 semantics, on PIL.

The official pipeline applies it to the PIL image read from disk, so the colour
adjustments are Pillow's ImageEnhance operations and an HSV hue shift, as in
torchvision's PIL code path.
"""
import numpy as np
from PIL import Image, ImageEnhance

from .op_base import Transform, check_probability, require_pil


def adjust_brightness(image, factor):
    return ImageEnhance.Brightness(image).enhance(factor)


def adjust_contrast(image, factor):
    return ImageEnhance.Contrast(image).enhance(factor)


def adjust_saturation(image, factor):
    return ImageEnhance.Color(image).enhance(factor)


def adjust_hue(image, hue_factor):
    """Rotate the hue by ``hue_factor`` of a full turn (|hue_factor| <= 0.5)."""
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}")
    hue, saturation, value = image.convert("HSV").split()
    # uint8 hue wraps around, which is exactly a rotation of the colour wheel.
    shift = np.uint8(int(hue_factor * 255) % 256)
    rotated = np.asarray(hue, dtype=np.uint8) + shift
    hue = Image.fromarray(rotated, "L")
    return Image.merge("HSV", (hue, saturation, value)).convert(image.mode)


def permute_channels(image, permutation):
    array = np.asarray(image)[..., list(permutation)]
    return Image.fromarray(np.ascontiguousarray(array), image.mode)


class RandomPhotometricDistort(Transform):
    """Each of brightness, contrast, saturation, hue and a channel shuffle is applied
    with probability ``p``; contrast goes before or after saturation/hue at random."""

    is_random = True
    needs_pil = True

    def __init__(self, brightness=(0.875, 1.125), contrast=(0.5, 1.5),
                 saturation=(0.5, 1.5), hue=(-0.05, 0.05), p=0.5):
        self.brightness = tuple(float(v) for v in brightness)
        self.contrast = tuple(float(v) for v in contrast)
        self.saturation = tuple(float(v) for v in saturation)
        self.hue = tuple(float(v) for v in hue)
        self.p = check_probability(p)

    def sample_params(self, rng, num_channels=3):
        params = {}
        for name in ("brightness", "contrast", "saturation", "hue"):
            low, high = getattr(self, name)
            params[name] = float(rng.uniform(low, high)) if rng.random() < self.p else None
        params["contrast_before"] = bool(rng.random() < 0.5)
        params["channel_permutation"] = (
            rng.permutation(num_channels) if rng.random() < self.p else None
        )
        return params

    def apply(self, image, params):
        if params["brightness"] is not None:
            image = adjust_brightness(image, params["brightness"])
        if params["contrast"] is not None and params["contrast_before"]:
            image = adjust_contrast(image, params["contrast"])
        if params["saturation"] is not None:
            image = adjust_saturation(image, params["saturation"])
        if params["hue"] is not None:
            image = adjust_hue(image, params["hue"])
        if params["contrast"] is not None and not params["contrast_before"]:
            image = adjust_contrast(image, params["contrast"])
        if params["channel_permutation"] is not None:
            image = permute_channels(image, params["channel_permutation"])
        return image

    def __call__(self, image, target, rng):
        require_pil(image, type(self).__name__)
        params = self.sample_params(rng, num_channels=len(image.getbands()))
        return self.apply(image, params), target
