"""Image representation changes: ToImageTensor (PIL -> uint8 CHW array) and
ConvertDtype (uint8 -> float32 scaled to [0, 1])."""
import numpy as np
from PIL import Image

from .op_base import Transform


class ToImageTensor(Transform):
    """PIL image -> uint8 NumPy array in CHW layout."""

    def __call__(self, image, target, rng=None):
        if not isinstance(image, Image.Image):
            return image, target
        array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
        return np.ascontiguousarray(array.transpose(2, 0, 1)), target


class ConvertDtype(Transform):
    """Cast the CHW image to ``dtype``; integer images are scaled into [0, 1]."""

    def __init__(self, dtype="float32"):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"ConvertDtype supports float dtypes only, got {self.dtype}")

    def __call__(self, image, target, rng=None):
        if isinstance(image, Image.Image):
            raise TypeError("ConvertDtype needs an array image; put ToImageTensor before it")
        image = np.asarray(image)
        if np.issubdtype(image.dtype, np.integer):
            scale = self.dtype.type(np.iinfo(image.dtype).max)
            return image.astype(self.dtype) / scale, target
        return image.astype(self.dtype), target
