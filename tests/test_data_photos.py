"""Tests that the demo photographs are small real RGB JPEGs with a documented source."""
from pathlib import Path

from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"


def test_photos_are_small_documented_jpegs():
    photos = sorted(PHOTOS.glob("*.jpg"))
    assert 2 <= len(photos) <= 4
    readme = (PHOTOS / "README.md").read_text()
    for path in photos:
        assert path.stat().st_size < 100 * 1024
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert max(image.size) <= 480 and min(image.size) >= 200
        assert f"`{path.name}`" in readme
