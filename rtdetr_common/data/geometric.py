"""Geometric augmentation on a PIL image and its xyxy pixel boxes, with the semantics
of torchvision v2's RandomZoomOut, RandomIoUCrop, RandomHorizontalFlip and Resize
(the official RT-DETR training pipeline)."""
import numpy as np
from PIL import Image

from .box_ops import box_iou_xyxy, clip_xyxy
from .op_base import Transform, check_probability, has_boxes, require_pil, with_boxes


class RandomZoomOut(Transform):
    """With probability ``p``, place the image at a random spot of a canvas
    ``r`` times larger (``r`` uniform in ``side_range``) filled with ``fill``."""

    is_random = True
    touches_boxes = True
    needs_pil = True

    def __init__(self, fill=0, side_range=(1.0, 4.0), p=0.5):
        low, high = (float(v) for v in side_range)
        if not 1.0 <= low <= high:
            raise ValueError(f"side_range must satisfy 1 <= low <= high, got {side_range}")
        self.fill = fill
        self.side_range = (low, high)
        self.p = check_probability(p)

    def _fill_colour(self, bands):
        if isinstance(self.fill, (int, float)):
            return tuple([int(self.fill)] * bands)
        return tuple(int(v) for v in self.fill)

    def __call__(self, image, target, rng):
        require_pil(image, type(self).__name__)
        if rng.random() >= self.p:
            return image, target
        width, height = image.size
        low, high = self.side_range
        ratio = low + rng.random() * (high - low)
        canvas_w, canvas_h = int(width * ratio), int(height * ratio)
        offset_x, offset_y = rng.random(2)
        left = int((canvas_w - width) * offset_x)
        top = int((canvas_h - height) * offset_y)
        canvas = Image.new(image.mode, (canvas_w, canvas_h), self._fill_colour(len(image.getbands())))
        canvas.paste(image, (left, top))
        if has_boxes(target):
            target = with_boxes(target, target["boxes"] + np.float32([left, top, left, top]))
        return canvas, target


class RandomIoUCrop(Transform):
    """The SSD crop. With probability ``p``: draw a minimum IoU from
    ``sampler_options`` (a value >= 1 means "keep the image"), then try ``trials``
    random crops for one that holds the centre of some box and overlaps such a box
    with at least that IoU; redraw the option if none does. Boxes whose centre
    falls outside the crop are zeroed (for SanitizeBoundingBox to drop), the rest
    are clipped to the crop."""

    is_random = True
    touches_boxes = True
    needs_pil = True

    # A safety net for option lists without a "keep" value: torchvision would loop forever.
    max_option_draws = 1000

    def __init__(self, min_scale=0.3, max_scale=1.0, min_aspect_ratio=0.5, max_aspect_ratio=2.0,
                 sampler_options=None, trials=40, p=1.0):
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.min_aspect_ratio = float(min_aspect_ratio)
        self.max_aspect_ratio = float(max_aspect_ratio)
        if sampler_options is None:
            sampler_options = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 2.0]
        self.sampler_options = [float(v) for v in sampler_options]
        self.trials = int(trials)
        self.p = check_probability(p)

    def sample_crop(self, width, height, boxes, rng):
        """Return ``(left, top, crop_w, crop_h, centre_inside)`` or ``None`` for no crop."""
        for _ in range(self.max_option_draws):
            min_iou = self.sampler_options[int(rng.integers(len(self.sampler_options)))]
            if min_iou >= 1.0:
                return None
            for _ in range(self.trials):
                scale = self.min_scale + (self.max_scale - self.min_scale) * rng.random(2)
                crop_w, crop_h = int(width * scale[0]), int(height * scale[1])
                if crop_h == 0 or not self.min_aspect_ratio <= crop_w / crop_h <= self.max_aspect_ratio:
                    continue
                offset = rng.random(2)
                left = int((width - crop_w) * offset[0])
                top = int((height - crop_h) * offset[1])
                right, bottom = left + crop_w, top + crop_h
                if left == right or top == bottom:
                    continue
                centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
                centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
                inside = (left < centre_x) & (centre_x < right) & (top < centre_y) & (centre_y < bottom)
                if not inside.any():
                    continue
                crop_box = np.array([[left, top, right, bottom]], dtype=np.float32)
                if box_iou_xyxy(boxes[inside], crop_box).max() < min_iou:
                    continue
                return left, top, crop_w, crop_h, inside
        return None

    def __call__(self, image, target, rng):
        require_pil(image, type(self).__name__)
        if rng.random() >= self.p:
            return image, target
        if not has_boxes(target):
            raise ValueError("RandomIoUCrop needs a target with boxes")
        width, height = image.size
        crop = self.sample_crop(width, height, np.asarray(target["boxes"], dtype=np.float32), rng)
        if crop is None:
            return image, target
        left, top, crop_w, crop_h, inside = crop
        image = image.crop((left, top, left + crop_w, top + crop_h))
        boxes = target["boxes"] - np.float32([left, top, left, top])
        boxes = clip_xyxy(boxes, crop_w, crop_h)
        boxes[~inside] = 0
        return image, with_boxes(target, boxes)


class RandomHorizontalFlip(Transform):
    """Mirror the image left-right with probability ``p``."""

    is_random = True
    touches_boxes = True
    needs_pil = True

    def __init__(self, p=0.5):
        self.p = check_probability(p)

    def __call__(self, image, target, rng):
        require_pil(image, type(self).__name__)
        if rng.random() >= self.p:
            return image, target
        width = image.size[0]
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if has_boxes(target):
            boxes = target["boxes"]
            flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
            target = with_boxes(target, flipped)
        return image, target


def resized_output_size(width, height, size, max_size=None):
    """Target (width, height): ``size`` is [h, w], or an int for the shorter side."""
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            size = size[0]
        else:
            out_h, out_w = (int(v) for v in size)
            return out_w, out_h
    short, long = min(width, height), max(width, height)
    new_short, new_long = int(size), int(int(size) * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    return (new_short, new_long) if width <= height else (new_long, new_short)


class Resize(Transform):
    """Bilinear resize to ``size`` ([h, w], or an int for the shorter side); boxes scale
    along and are clamped to the new image. (torchvision does not clamp: float32
    rounding can put a box touching the right or bottom edge a hair outside the
    image, and SanitizeBoundingBox then drops it.)"""

    touches_boxes = True
    needs_pil = True

    def __init__(self, size, max_size=None):
        self.size = list(size) if isinstance(size, (list, tuple)) else int(size)
        self.max_size = max_size

    def __call__(self, image, target, rng=None):
        require_pil(image, type(self).__name__)
        width, height = image.size
        out_w, out_h = resized_output_size(width, height, self.size, self.max_size)
        image = image.resize((out_w, out_h), Image.Resampling.BILINEAR)
        if has_boxes(target):
            scale = np.float32([out_w / width, out_h / height, out_w / width, out_h / height])
            target = with_boxes(target, clip_xyxy(target["boxes"] * scale, out_w, out_h))
        return image, target
