"""Tests of detection drawing."""
import numpy as np
from PIL import Image

from rtdetr_common.draw import class_colour, draw_detections, label_name, save_detections_png


def test_png_has_the_input_size_and_boxes_in_class_colours(tmp_path):
    image = Image.new("RGB", (160, 120), (128, 128, 128))
    path = tmp_path / "out.png"
    save_detections_png(path, image, [[20, 30, 100, 110], [5, 5, 60, 50]], [2, 5], [0.9, 0.1],
                        {2: "cat", 5: "dog"}, score_threshold=0.5)
    saved = Image.open(path)
    assert saved.format == "PNG" and saved.size == (160, 120)
    pixels = np.asarray(saved.convert("RGB"))
    # Right and bottom edges of the kept box, away from its caption.
    assert tuple(pixels[70, 100]) == class_colour(2)
    assert tuple(pixels[110, 60]) == class_colour(2)
    # The box under the score threshold is not drawn.
    assert tuple(pixels[40, 5]) == (128, 128, 128)
    assert tuple(pixels[70, 60]) == (128, 128, 128)
    assert tuple(np.asarray(image)[0, 0]) == (128, 128, 128)  # the input is left alone


def test_float_chw_input_and_no_scores():
    chw = np.zeros((3, 40, 50), dtype=np.float32)
    chw[1] = 1.0
    drawn = draw_detections(chw, np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert drawn.size == (50, 40)
    assert tuple(np.asarray(drawn)[10, 10]) == (0, 255, 0)
    drawn = draw_detections(chw, [[5, 5, 45, 35]], [0])
    assert tuple(np.asarray(drawn)[20, 45]) == class_colour(0)


def test_class_colours_are_distinct():
    colours = {class_colour(label) for label in range(80)}
    assert len(colours) == 80


def test_label_names_from_dict_or_sequence():
    assert label_name({3: "cup"}, 3) == "cup" and label_name({3: "cup"}, 4) == "4"
    assert label_name(["cat", "dog"], 1) == "dog" and label_name(["cat"], 5) == "5"
    assert label_name(None, 2) == "2"


def test_overlay_shows_both_sets_with_a_legend_and_scales_small_images():
    from rtdetr_common.draw import draw_overlay
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    blue, orange = (31, 119, 180), (255, 127, 14)
    box = [[8, 8, 56, 40]]
    drawn = draw_overlay(image, [("reference", blue, box, [0], [0.9]), ("jittor", orange, box, [0], [0.9])],
                         min_side=96, note="agree")
    assert drawn.width == 128 and drawn.height > 96  # scaled x2, legend band below
    pixels = np.asarray(drawn)
    row = [tuple(pixels[50, x]) for x in range(105, 118)]  # across the box's right edge, mid-height
    assert blue in row and orange in row  # the thin orange edge lies on the thick blue one, both visible
    legend = {tuple(p) for p in pixels[96:].reshape(-1, 3)}
    assert blue in legend and orange in legend
