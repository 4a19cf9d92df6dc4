"""Tests of COCO bbox evaluation on the synthetic fixture's validation set."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from rtdetr_common.coco_eval import (
    detections_from_predictions,
    evaluate_detections,
    format_per_category_table,
    write_detections_json,
)

REPO = Path(__file__).resolve().parents[1]
VAL_ANN = REPO / "fixtures" / "synthetic_coco" / "annotations" / "instances_val.json"
SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def ground_truth():
    return json.loads(VAL_ANN.read_text())


def perfect_detections(image_ids=None):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in ground_truth()["annotations"]
        if image_ids is None or a["image_id"] in image_ids
    ]


def test_perfect_detections_score_one():
    result = evaluate_detections(str(VAL_ANN), perfect_detections())
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(1.0)
    categories = {c["id"]: c["name"] for c in ground_truth()["categories"]}
    rows = result["per_category"]
    assert {row["category_id"]: row["name"] for row in rows} == categories
    assert all(row["AP"] == pytest.approx(1.0) for row in rows if row["num_gt"] > 0)
    assert sum(row["num_gt"] for row in rows) == len(ground_truth()["annotations"])
    assert "Average Precision" in result["summary"]
    table = format_per_category_table(rows)
    assert all(name in table for name in categories.values())


def test_boxes_shifted_to_iou_0_6_pass_ap50_and_fail_ap75():
    shifted = []
    for det in perfect_detections():
        x, y, w, h = det["bbox"]
        # Sliding a box by a quarter of its width leaves IoU = (3/4) / (5/4) = 0.6.
        shifted.append(dict(det, bbox=[x + w / 4, y, w, h]))
    result = evaluate_detections(VAL_ANN, shifted)
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(0.0)


def test_garbage_detections_score_about_zero():
    rng = np.random.default_rng(0)
    image_ids = [image["id"] for image in ground_truth()["images"]]
    garbage = [
        {"image_id": int(rng.choice(image_ids)), "category_id": int(rng.integers(1, 5)),
         "bbox": [float(v) for v in rng.uniform(0, 20, 2)] + [3.0, 3.0], "score": float(rng.random())}
        for _ in range(300)
    ]
    result = evaluate_detections(VAL_ANN, garbage)
    assert result["AP"] < 0.01 and result["AP50"] < 0.01


def test_no_detections_give_zeros():
    result = evaluate_detections(VAL_ANN, [])
    assert all(result[name] in (0.0, -1.0) for name in SUMMARY)
    assert result["AP"] == 0.0 and result["AP50"] == 0.0
    assert all(row["AP"] in (0.0, -1.0) for row in result["per_category"])


def test_evaluating_a_subset_of_images():
    half = {image["id"] for image in ground_truth()["images"][:8]}
    detections = perfect_detections(image_ids=half)
    assert evaluate_detections(VAL_ANN, detections, image_ids=half)["AP"] == pytest.approx(1.0)
    assert evaluate_detections(VAL_ANN, detections)["AP"] < 0.9


def test_detection_on_an_unknown_image_is_refused():
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_detections(VAL_ANN, [{"image_id": 999999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])


def test_predictions_become_coco_records():
    predictions = [
        {"labels": np.array([0, 3, 7]), "boxes": np.array([[10, 20, 30, 60], [0, 0, 5, 5], [1, 1, 2, 2]], np.float32),
         "scores": np.array([0.9, 0.05, 0.8], np.float32)},
        {"labels": np.array([], np.int64), "boxes": np.zeros((0, 4), np.float32), "scores": np.array([], np.float32)},
    ]
    with pytest.warns(UserWarning, match="1 detections"):
        records = detections_from_predictions(predictions, [42, 43], {0: 1, 3: 4}, score_threshold=0.01)
    assert records == [
        {"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 4, "bbox": [0.0, 0.0, 5.0, 5.0], "score": pytest.approx(0.05)},
    ]
    assert detections_from_predictions(predictions[:1], [42], {0: 1, 3: 4, 7: 2}, score_threshold=0.5)[1]["category_id"] == 2
    with pytest.raises(ValueError):
        detections_from_predictions(predictions, [42], {0: 1})


def test_written_json_is_a_pycocotools_results_file(tmp_path):
    path = tmp_path / "dets.json"
    detections = perfect_detections()
    write_detections_json(detections, path)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(VAL_ANN))
        loaded = gt.loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(detections)
