"""Tests of the NumPy/PIL data transforms: box/pixel consistency, determinism, and
the individual ops' documented behaviour."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rtdetr_common.config import load_config
from rtdetr_common.data.box_transforms import ConvertBox, SanitizeBoundingBox
from rtdetr_common.data.geometric import RandomHorizontalFlip, RandomIoUCrop, RandomZoomOut, Resize
from rtdetr_common.data.photometric import (
    RandomPhotometricDistort,
    adjust_brightness,
    adjust_hue,
    permute_channels,
)
from rtdetr_common.data.tensor_conversion import ConvertDtype, ToImageTensor
from rtdetr_common.data.transforms import Compose, build_transforms
from tests.strategies import st_floats

REPO = Path(__file__).resolve().parents[1]
RED = (255, 0, 0)


def red_box_sample(width, height, box):
    """A black image with ``box`` (xyxy, integer) filled red, and its target."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = RED
    target = {
        "boxes": np.array([box], dtype=np.float32),
        "labels": np.array([7], dtype=np.int64),
        "area": np.array([(x2 - x1) * (y2 - y1)], dtype=np.float32),
        "iscrowd": np.zeros(1, dtype=np.int64),
    }
    return Image.fromarray(pixels), target


def assert_box_matches_red_pixels(image, box, margin):
    """Pixels well inside ``box`` are red and pixels well outside it are black."""
    pixels = np.asarray(image).astype(int)
    height, width = pixels.shape[:2]
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[0:height, 0:width]
    centre_x, centre_y = xs + 0.5, ys + 0.5
    inner = (centre_x > x1 + margin) & (centre_x < x2 - margin) & (centre_y > y1 + margin) & (centre_y < y2 - margin)
    outer = (centre_x < x1 - margin) | (centre_x > x2 + margin) | (centre_y < y1 - margin) | (centre_y > y2 + margin)
    red = (pixels[..., 0] >= 250) & (pixels[..., 1] <= 5) & (pixels[..., 2] <= 5)
    black = pixels.max(axis=-1) <= 5
    assert red[inner].all(), "a pixel inside the box is not red"
    assert black[outer].all(), "a pixel outside the box is not black"


def assert_boxes_inside(boxes, width, height):
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def official_train_ops(size):
    ops = load_config(REPO / "configs/rtdetr/include/dataloader.yml")["train_dataloader"]["dataset"]["transforms"]["ops"]
    for op in ops:
        if op["type"] == "Resize":
            op["size"] = [size, size]
    return ops


box_scenes = st.integers(40, 160).flatmap(
    lambda width: st.integers(40, 160).flatmap(
        lambda height: st.tuples(
            st.just(width),
            st.just(height),
            st.integers(0, width - 12),
            st.integers(0, height - 12),
        ).flatmap(
            lambda s: st.tuples(
                st.just(s[0]),
                st.just(s[1]),
                st.tuples(
                    st.just(s[2]),
                    st.just(s[3]),
                    st.integers(s[2] + 12, s[0]),
                    st.integers(s[3] + 12, s[1]),
                ),
            )
        )
    )
)


@settings(deadline=None)
@given(scene=box_scenes, seed=st.integers(0, 2**32 - 1))
def test_geometric_ops_keep_the_box_on_its_pixels(scene, seed):
    width, height, box = scene
    image, target = red_box_sample(width, height, box)
    rng = np.random.default_rng(seed)
    ops = [RandomZoomOut(p=1.0), RandomIoUCrop(p=1.0), SanitizeBoundingBox(1), RandomHorizontalFlip(p=1.0)]
    for op in ops:
        image, target = op(image, target, rng)
        if len(target["boxes"]) == 0:
            return  # the crop left the box out and Sanitize dropped it
        assert_boxes_inside(target["boxes"], *image.size)
        # These ops move whole pixels, so the box must match the red pixels exactly.
        assert_box_matches_red_pixels(image, target["boxes"][0], margin=0)
    before = image.size
    image, target = Resize([96, 80])(image, target, rng)
    assert image.size == (80, 96)
    # Bilinear resampling blurs an edge over about one source pixel.
    margin = 1.5 + max(80 / before[0], 96 / before[1])
    assert_boxes_inside(target["boxes"], 80, 96)
    assert_box_matches_red_pixels(image, target["boxes"][0], margin=margin)


@settings(deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st_floats(-20, 140), st_floats(-20, 140), st_floats(0, 80), st_floats(0, 80)),
        min_size=0,
        max_size=6,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_official_pipeline_outputs_valid_normalised_boxes(boxes, seed):
    image = Image.new("RGB", (120, 90), (30, 60, 90))
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=np.float32).reshape(-1, 4)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, 120)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, 90)
    labels = np.arange(len(xyxy), dtype=np.int64) + 10
    target = {"boxes": xyxy, "labels": labels, "area": np.ones(len(xyxy), np.float32),
              "iscrowd": np.zeros(len(xyxy), np.int64)}
    out_image, out = Compose(official_train_ops(64))(image, target, np.random.default_rng(seed))
    assert out_image.shape == (3, 64, 64) and out_image.dtype == np.float32
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (len(out["labels"]), 4)
    assert len(out["area"]) == len(out["iscrowd"]) == len(out["labels"])
    assert set(out["labels"].tolist()) <= set(labels.tolist())
    centre, size = out["boxes"][:, :2], out["boxes"][:, 2:]
    # At least one pixel of the 64-px output, and inside the unit square.
    assert (size >= 1 / 64 - 1e-6).all()
    assert (centre - size / 2 >= -1e-6).all() and (centre + size / 2 <= 1 + 1e-6).all()


def test_same_seed_same_output_and_different_seeds_differ():
    image, target = red_box_sample(150, 110, (20, 30, 90, 100))
    pipeline = Compose(official_train_ops(96))

    def run(seed):
        return pipeline(image, target, np.random.default_rng(seed))

    first, again = run(5), run(5)
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[1]["boxes"], again[1]["boxes"])
    others = [run(seed) for seed in range(6, 12)]
    assert any(not np.array_equal(first[0], other[0]) for other in others)
    assert any(not np.array_equal(first[1]["boxes"], other[1]["boxes"]) for other in others)


def test_pipeline_does_not_modify_its_input():
    image, target = red_box_sample(150, 110, (20, 30, 90, 100))
    pixels_before, boxes_before = np.asarray(image).copy(), target["boxes"].copy()
    Compose(official_train_ops(64))(image, target, np.random.default_rng(0))
    assert np.array_equal(np.asarray(image), pixels_before)
    assert np.array_equal(target["boxes"], boxes_before)


def test_random_pipeline_refuses_to_run_without_a_generator():
    image, target = red_box_sample(64, 64, (10, 10, 40, 40))
    with pytest.raises(ValueError, match="rng"):
        Compose(official_train_ops(32))(image, target)


def test_config_pipelines_build_and_bad_specs_are_rejected():
    dataloader = load_config(REPO / "configs/rtdetr/include/dataloader.yml")
    train = build_transforms(dataloader["train_dataloader"]["dataset"]["transforms"])
    val = build_transforms(dataloader["val_dataloader"]["dataset"]["transforms"])
    assert [type(op).__name__ for op in train.ops][:3] == ["RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop"]
    assert train.is_random and not val.is_random
    assert build_transforms(None).ops == []
    with pytest.raises(ValueError, match="unknown transform"):
        Compose([{"type": "RandomRotate"}])
    with pytest.raises(ValueError, match="cannot follow ConvertBox"):
        Compose([{"type": "ConvertBox", "out_fmt": "cxcywh"}, {"type": "RandomHorizontalFlip"}])
    with pytest.raises(ValueError, match="cannot follow ToImageTensor"):
        Compose([{"type": "ToImageTensor"}, {"type": "Resize", "size": [8, 8]}])
    with pytest.raises(ValueError, match="bad arguments"):
        Compose([{"type": "Resize", "sise": [8, 8]}])


def test_sanitize_drops_small_and_out_of_image_boxes_with_their_rows():
    image = Image.new("RGB", (100, 50))
    target = {
        "boxes": np.array([
            [10, 10, 20, 20],     # fine
            [10, 10, 10.5, 30],   # narrower than 1 px
            [30, 30, 40, 30],     # zero height
            [-1, 5, 20, 20],      # starts left of the image
            [80, 10, 101, 20],    # ends right of the image
            [0, 0, 100, 50],      # the whole image: fine
        ], dtype=np.float32),
        "labels": np.array([0, 1, 2, 3, 4, 5]),
        "area": np.array([0, 1, 2, 3, 4, 5], dtype=np.float32),
        "iscrowd": np.array([0, 0, 0, 0, 0, 1]),
        "image_id": np.array(3),
    }
    _, out = SanitizeBoundingBox(min_size=1)(image, target)
    assert out["labels"].tolist() == [0, 5]
    assert out["area"].tolist() == [0, 5]
    assert out["iscrowd"].tolist() == [0, 1]
    assert out["boxes"].tolist() == [[10, 10, 20, 20], [0, 0, 100, 50]]
    assert int(out["image_id"]) == 3
    with pytest.raises(ValueError):
        SanitizeBoundingBox(min_size=0.5)


def test_convert_box_to_normalised_cxcywh():
    image = Image.new("RGB", (200, 100))
    target = {"boxes": np.array([[20, 10, 60, 50]], dtype=np.float32)}
    _, out = ConvertBox(out_fmt="cxcywh", normalize=True)(image, target)
    np.testing.assert_allclose(out["boxes"], [[0.2, 0.3, 0.2, 0.4]], rtol=1e-6)
    _, out = ConvertBox(out_fmt="xywh")(image, target)
    np.testing.assert_allclose(out["boxes"], [[20, 10, 40, 40]])


def test_to_image_tensor_and_convert_dtype_give_chw_floats_in_unit_range():
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[1, 2] = (255, 51, 0)
    array, _ = ToImageTensor()(Image.fromarray(pixels), None)
    assert array.shape == (3, 2, 3) and array.dtype == np.uint8
    floats, _ = ConvertDtype()(array, None)
    assert floats.dtype == np.float32
    np.testing.assert_allclose(floats[:, 1, 2], [1.0, 0.2, 0.0], rtol=1e-6)
    assert floats.sum() == pytest.approx(1.2)


def test_horizontal_flip_mirrors_boxes():
    image = Image.new("RGB", (100, 40))
    target = {"boxes": np.array([[10, 5, 30, 25]], dtype=np.float32)}
    _, out = RandomHorizontalFlip(p=1.0)(image, target, np.random.default_rng(0))
    assert out["boxes"].tolist() == [[70, 5, 90, 25]]
    _, same = RandomHorizontalFlip(p=0.0)(image, target, np.random.default_rng(0))
    assert same["boxes"].tolist() == [[10, 5, 30, 25]]


def test_resize_scales_boxes_and_accepts_a_shorter_side():
    image = Image.new("RGB", (200, 100))
    target = {"boxes": np.array([[20, 10, 60, 50]], dtype=np.float32)}
    resized, out = Resize([50, 400])(image, target)
    assert resized.size == (400, 50)
    np.testing.assert_allclose(out["boxes"], [[40, 5, 120, 25]])
    resized, _ = Resize(60)(image, target)
    assert resized.size == (120, 60)


def test_zoom_out_canvas_size_and_fill():
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    target = {"boxes": np.array([[0, 0, 40, 30]], dtype=np.float32)}
    for seed in range(10):
        canvas, out = RandomZoomOut(fill=0, p=1.0)(image, target, np.random.default_rng(seed))
        assert 40 <= canvas.size[0] <= 160 and 30 <= canvas.size[1] <= 120
        x1, y1, x2, y2 = out["boxes"][0].astype(int)
        assert (x2 - x1, y2 - y1) == (40, 30)
        pixels = np.asarray(canvas)
        assert (pixels[y1:y2, x1:x2] == (200, 100, 50)).all()
        assert pixels.sum() == image.size[0] * image.size[1] * 350


def test_iou_crop_keep_option_and_probability():
    image, target = red_box_sample(100, 100, (10, 10, 60, 60))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        kept, out = RandomIoUCrop(sampler_options=[2.0], p=1.0)(image, target, rng)
        assert kept.size == (100, 100) and out["boxes"].tolist() == target["boxes"].tolist()
        kept, _ = RandomIoUCrop(p=0.0)(image, target, rng)
        assert kept.size == (100, 100)


def test_iou_crop_zeroes_boxes_whose_centre_is_cut_away():
    image = Image.new("RGB", (200, 200))
    target = {"boxes": np.array([[0, 0, 20, 20], [100, 100, 190, 190]], dtype=np.float32),
              "labels": np.array([1, 2])}
    crop = RandomIoUCrop(min_scale=0.5, max_scale=0.5, sampler_options=[0.0], p=1.0)
    for seed in range(20):
        cropped, out = crop(image, target, np.random.default_rng(seed))
        left_out = out["boxes"][0]
        assert cropped.size == (100, 100)
        # The crop must hold a box centre; a 100-px crop cannot hold both.
        if not left_out.any():
            assert out["boxes"][1].any()
        _, sanitized = SanitizeBoundingBox()(cropped, out)
        assert len(sanitized["labels"]) == 1


def test_photometric_adjustments():
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    cyanish = np.asarray(adjust_hue(red, 0.5))[0, 0]
    assert cyanish[0] < 10 and cyanish[1] > 240 and cyanish[2] > 240
    assert np.asarray(permute_channels(Image.new("RGB", (2, 2), (10, 20, 30)), [2, 1, 0]))[0, 0].tolist() == [30, 20, 10]
    assert np.asarray(adjust_brightness(Image.new("RGB", (2, 2), (200, 100, 0)), 0.5))[0, 0].tolist() == [100, 50, 0]


def test_photometric_distort_probability_and_boxes():
    rng = np.random.default_rng(0)
    always, never = RandomPhotometricDistort(p=1.0), RandomPhotometricDistort(p=0.0)
    params = always.sample_params(rng)
    assert all(params[name] is not None for name in ("brightness", "contrast", "saturation", "hue"))
    assert sorted(params["channel_permutation"].tolist()) == [0, 1, 2]
    assert 0.875 <= params["brightness"] <= 1.125 and -0.05 <= params["hue"] <= 0.05
    params = never.sample_params(rng)
    assert all(params[name] is None for name in ("brightness", "contrast", "saturation", "hue", "channel_permutation"))
    image, target = red_box_sample(50, 40, (5, 5, 30, 30))
    same, out = never(image, target, rng)
    assert np.array_equal(np.asarray(same), np.asarray(image)) and out is target
    changed, out = always(image, target, np.random.default_rng(1))
    assert changed.size == image.size and out is target
    assert not np.array_equal(np.asarray(changed), np.asarray(image))


def test_resize_keeps_boxes_touching_the_far_edges():
    # In float32, 75 * (80 / 75) and 81 * (90 / 81) round to just above 80 and 90.
    image = Image.new("RGB", (75, 81))
    target = {"boxes": np.array([[0, 0, 75, 81]], dtype=np.float32), "labels": np.array([1])}
    assert np.float32(75) * np.float32(80 / 75) > 80 and np.float32(81) * np.float32(90 / 81) > 90
    resized, out = Resize([90, 80])(image, target)
    assert out["boxes"].tolist() == [[0, 0, 80, 90]]
    _, kept = SanitizeBoundingBox()(resized, out)
    assert kept["labels"].tolist() == [1]
