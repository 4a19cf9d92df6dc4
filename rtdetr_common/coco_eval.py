"""COCO bbox evaluation with pycocotools, plus conversion of post-processed model
output into COCO detection records.

A detection record is ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
with the box in original-image pixels. ``evaluate_detections`` returns the twelve
COCO summary numbers by name (0..1; pycocotools' -1 where the ground truth has no
object of that kind, e.g. no small objects) and a per-category AP table.
"""
import contextlib
import io
import json
import warnings

import numpy as np
from pycocotools.cocoeval import COCOeval

from .data.coco_api import coco_from_dict, load_coco

SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_from_predictions(predictions, image_ids, label2category, score_threshold=0.0):
    """COCO detection records from per-image post-processor output.

    ``predictions[i]`` holds NumPy ``labels`` (N,), ``boxes`` (N, 4) xyxy in original
    pixels and ``scores`` (N,) for image ``image_ids[i]``; ``label2category`` maps
    model labels to dataset category ids. Labels without a category are dropped
    with a warning.
    """
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    records, unmapped = [], 0
    for prediction, image_id in zip(predictions, image_ids):
        labels = np.asarray(prediction["labels"]).reshape(-1)
        boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(prediction["scores"], dtype=np.float64).reshape(-1)
        for label, box, score in zip(labels, boxes, scores):
            if score < score_threshold:
                continue
            category_id = label2category.get(int(label))
            if category_id is None:
                unmapped += 1
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append({
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            })
    if unmapped:
        warnings.warn(f"dropped {unmapped} detections whose label has no dataset category")
    return records


def write_detections_json(detections, path):
    with open(path, "w") as f:
        json.dump(detections, f)


def _detections_as_coco(coco_gt, detections):
    """A COCO object holding ``detections`` as results (also when there are none,
    where pycocotools' loadRes fails)."""
    known_images = set(coco_gt.getImgIds())
    annotations = []
    for ann_id, det in enumerate(detections, start=1):
        if det["image_id"] not in known_images:
            raise ValueError(f"detection for image id {det['image_id']}, which is not in the ground truth")
        x, y, w, h = (float(v) for v in det["bbox"])
        annotations.append({
            "id": ann_id,
            "image_id": det["image_id"],
            "category_id": det["category_id"],
            "bbox": [x, y, w, h],
            "area": w * h,
            "score": float(det["score"]),
            "iscrowd": 0,
        })
    return coco_from_dict({
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": annotations,
    })


def _per_category_rows(cocoeval, coco_gt):
    """AP and AP50 per category (area 'all', 100 detections); -1 where undefined."""
    precision = cocoeval.eval["precision"]  # [iou thresholds, recall points, categories, areas, max dets]
    rows = []
    for k, category_id in enumerate(cocoeval.params.catIds):
        all_ious = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        rows.append({
            "category_id": int(category_id),
            "name": coco_gt.cats[category_id].get("name", str(category_id)),
            "num_gt": len(coco_gt.getAnnIds(imgIds=cocoeval.params.imgIds, catIds=[category_id], iscrowd=False)),
            "AP": float(all_ious[all_ious > -1].mean()) if (all_ious > -1).any() else -1.0,
            "AP50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else -1.0,
        })
    return rows


def evaluate_detections(coco_gt, detections, image_ids=None):
    """Evaluate ``detections`` against ``coco_gt`` (a COCO object or annotation path).

    Only ``image_ids`` are evaluated when given (default: every ground-truth image).
    Returns a dict with the names in ``SUMMARY_NAMES``, ``per_category`` (a list of
    row dicts) and ``summary`` (pycocotools' printed summary text).
    """
    coco_gt = load_coco(coco_gt)
    coco_dt = _detections_as_coco(coco_gt, detections)
    cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    cocoeval.params.imgIds = sorted(set(coco_gt.getImgIds() if image_ids is None else (int(i) for i in image_ids)))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    result = {name: float(value) for name, value in zip(SUMMARY_NAMES, cocoeval.stats)}
    result["per_category"] = _per_category_rows(cocoeval, coco_gt)
    result["summary"] = printed.getvalue()
    return result


def format_per_category_table(rows):
    """The per-category rows as an aligned plain-text table."""
    width = max([len("category")] + [len(row["name"]) for row in rows])
    lines = [f"{'category':<{width}}  {'id':>4}  {'gt':>5}  {'AP':>6}  {'AP50':>6}"]
    for row in rows:
        lines.append(
            f"{row['name']:<{width}}  {row['category_id']:>4}  {row['num_gt']:>5}  "
            f"{row['AP']:>6.3f}  {row['AP50']:>6.3f}"
        )
    return "\n".join(lines)
