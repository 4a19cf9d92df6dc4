"""Reading image files for the dataset and the infer tool, with one error type.

Pillow fails on a corrupt or truncated file in many ways (``UnidentifiedImageError``,
``OSError``, ``SyntaxError``, ``struct.error``, ``DecompressionBombError``...);
``read_image`` turns each into ``ImageError`` naming the file and the reason.
"""
from PIL import Image

from ..errors import ImageError, reason


def read_image(path):
    """The image at ``path`` as an RGB PIL image, fully decoded."""
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(f"{path}: {reason(e)}") from e
