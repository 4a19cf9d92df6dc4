"""Detections of the two frameworks on one image, matched box by box.

Each side's post-processed detections (``postprocessor.labels/boxes/scores`` probes:
the top ``num_top_queries`` (query, class) pairs, boxes xyxy in pixels of the original
image) are matched one to one: same label, greedily by decreasing IoU (at least
``MATCH_MIN_IOU``). A matched pair is compared by its largest box-coordinate
difference in pixels and its score difference. A detection without a partner is
listed; it is excused only at the top-k cut-off, when its score is within the score
tolerance of the other side's lowest kept score (the two sides then kept different
members of a tie). The sides agree when nothing else is unmatched and every pair is
within ``BOX_TOL_PX`` (plus ``BOX_RTOL`` of the image's longer side) and ``SCORE_TOL``.
"""
import dataclasses
from collections import namedtuple

import numpy as np

Tolerance = namedtuple("Tolerance", "value reason")

MATCH_MIN_IOU = 0.5  # a pair below this is two different detections, not one that moved
BOX_TOL_PX = Tolerance(1e-3, "float32 boxes: measured at most 3.4e-5 px on trained weights (16 synthetic val "
                             "images, 128 px), gates 8.0e-5 px at 128 px; 1e-3 px is a thousandth of a pixel")
BOX_RTOL = Tolerance(2e-6, "normalised pred_boxes differ by ~5e-7 in float32 (measured 5.4e-7 at 640 px), so the "
                           "pixel error grows with the image: measured 1.8e-4 px on the photographs (up to 480 px) at "
                           "480x640 input, trained weights; 1e-3 + 2e-6 x 480 = 2.0e-3 px")
SCORE_TOL = Tolerance(1e-5, "scores are sigmoids of logits: measured at most 9.2e-7 (photographs at 480x640, "
                            "trained weights), 2.4e-7 (random weights, 96x128), gates 1.7e-6")


@dataclasses.dataclass
class Detections:
    """One image's detections: ``labels`` (N,), ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,)."""
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_capture(cls, capture, image=0):
        """The post-processor's probes of image ``image`` in a ``parity.capture.Capture``."""
        by = capture.by_name()
        return cls(labels=np.asarray(by["probe:postprocessor.labels"].value[image]).reshape(-1).astype(np.int64),
                   boxes=np.asarray(by["probe:postprocessor.boxes"].value[image], np.float64).reshape(-1, 4),
                   scores=np.asarray(by["probe:postprocessor.scores"].value[image], np.float64).reshape(-1))

    def __len__(self):
        return len(self.labels)

    def entry(self, i):
        return {"label": int(self.labels[i]), "score": float(self.scores[i]),
                "box_xyxy": [float(v) for v in self.boxes[i]]}

    def entries(self):
        return [self.entry(i) for i in range(len(self))]


def box_iou(a, b):
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, (np.abs(a[:, None] - b[None]).max(axis=2) == 0).astype(float))


def match(ref, test, min_iou=MATCH_MIN_IOU):
    """One-to-one pairs ``[(i, j)]`` of same-label detections, highest IoU first."""
    iou = box_iou(ref.boxes, test.boxes)
    iou[ref.labels[:, None] != test.labels[None, :]] = -1.0
    pairs, used_ref, used_test = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if i not in used_ref and j not in used_test:
            pairs.append((int(i), int(j)))
            used_ref.add(i)
            used_test.add(j)
    return pairs


def agreement(ref, test, image_size, box_tol=BOX_TOL_PX.value, box_rtol=BOX_RTOL.value, score_tol=SCORE_TOL.value):
    """How far ``test``'s detections lie from ``ref``'s on an image of ``image_size``
    (width, height): counts, worst pair differences, unmatched detections and the verdict."""
    pairs = match(ref, test)
    box_limit = box_tol + box_rtol * max(image_size)
    box_diffs = [float(np.abs(ref.boxes[i] - test.boxes[j]).max()) for i, j in pairs]
    score_diffs = [abs(float(ref.scores[i]) - float(test.scores[j])) for i, j in pairs]
    unmatched = {}
    for side, own, other, paired in (("reference", ref, test, {i for i, _ in pairs}),
                                     ("jittor", test, ref, {j for _, j in pairs})):
        cutoff = float(other.scores.min()) if len(other) else -np.inf  # an empty side has no cut-off
        unmatched[side] = [{**own.entry(k), "at_cutoff": bool(own.scores[k] <= cutoff + score_tol)}
                           for k in range(len(own)) if k not in paired]
    problems = []
    for side, entries in unmatched.items():
        real = [e for e in entries if not e["at_cutoff"]]
        if real:
            problems.append(f"{len(real)} detection(s) of the {side} unmatched (first: label {real[0]['label']}, "
                            f"score {real[0]['score']:.4g})")
    max_box, max_score = max(box_diffs, default=0.0), max(score_diffs, default=0.0)
    if max_box > box_limit:
        problems.append(f"box differs by {max_box:.3g} px > {box_limit:.3g} px")
    if max_score > score_tol:
        problems.append(f"score differs by {max_score:.3g} > {score_tol:.3g}")
    return {"agree": not problems, "reference": len(ref), "jittor": len(test), "matched": len(pairs),
            "max_box_diff_px": max_box, "max_score_diff": max_score,
            "box_tol_px": box_limit, "score_tol": score_tol,
            "unmatched_reference": unmatched["reference"], "unmatched_jittor": unmatched["jittor"],
            "problems": problems}
