"""Content checks of an infer run's ``detections.json``: what a user reads, not only
that the files exist.

Per image: one entry per photograph; per detection: exactly the keys ``label``
(int), ``name`` (the category's name), ``score`` (at or above the threshold, at most
1) and ``box_xyxy`` (four finite numbers, ordered corners, inside the image); per
image, scores in descending order. Each function returns a list of problems
(empty: all well).
"""
import json
import math
import os

from PIL import Image

KEYS = {"label", "name", "score", "box_xyxy"}


def box_problems(box, width, height):
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return [f"box {box} is not four finite numbers"]
    x1, y1, x2, y2 = box
    if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
        return [f"box {[round(v, 2) for v in box]} is not inside the {width}x{height} image"]
    return []


def detection_problems(det, width, height, threshold, names):
    if set(det) != KEYS:
        return [f"keys {sorted(det)} are not {sorted(KEYS)}"]
    problems = box_problems(det["box_xyxy"], width, height)
    if not isinstance(det["label"], int) or det["name"] != names.get(det["label"]):
        problems.append(f"label {det['label']!r} named {det['name']!r}, expected {names.get(det['label'])!r}")
    if not (isinstance(det["score"], float) and threshold <= det["score"] <= 1):
        problems.append(f"score {det['score']!r} outside [{threshold}, 1]")
    return problems


def image_problems(dets, width, height, threshold, names):
    problems = [p for det in dets for p in detection_problems(det, width, height, threshold, names)]
    scores = [det.get("score") for det in dets]
    if scores != sorted(scores, reverse=True):
        problems.append("scores are not in descending order")
    return problems


def infer_problems(out_dir, photos, threshold, names):
    """Problems of ``out_dir``'s ``detections.json`` and PNGs for the images in ``photos``."""
    with open(os.path.join(out_dir, "detections.json")) as f:
        results = json.load(f)
    expected = sorted(p for p in os.listdir(photos) if p.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
    if sorted(results) != expected:
        return [f"images {sorted(results)} are not the photographs {expected}"]
    problems = []
    for name, dets in results.items():
        if not os.path.isfile(os.path.join(out_dir, os.path.splitext(name)[0] + ".png")):
            problems.append(f"{name}: no PNG written")
        with Image.open(os.path.join(photos, name)) as image:
            width, height = image.size
        problems += [f"{name}: {p}" for p in image_problems(dets, width, height, threshold, names)]
    return problems
