"""Reference Hungarian matcher: its cost matrix against an independent float64
computation, its assignment optimal against brute force over all assignments
(focal and softmax cost forms), empty targets, output format and the
``matcher.indices`` override point."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from rtdetr_common import probes
from reference_pytorch.rtdetr.matcher import HungarianMatcher

WEIGHTS = {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}


def _giou64(a, b):
    """GIoU of two cxcywh boxes in plain float64 Python."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def independent_costs(logits, boxes, targets, focal, alpha=0.25, gamma=2.0, w=WEIGHTS):
    """Per image (Q, n) float64 cost matrices written out element by element."""
    costs = []
    for b in range(logits.shape[0]):
        labels, tboxes = targets[b]["labels"], targets[b]["boxes"]
        c = np.zeros((logits.shape[1], len(labels)))
        for q in range(logits.shape[1]):
            z = logits[b, q].astype(np.float64)
            if focal:
                p = 1 / (1 + np.exp(-z))
            else:
                e = np.exp(z - z.max())
                p = e / e.sum()
            for j, (lab, tb) in enumerate(zip(labels, tboxes)):
                pj = p[lab]
                if focal:
                    neg = (1 - alpha) * pj ** gamma * -math.log(1 - pj + 1e-8)
                    pos = alpha * (1 - pj) ** gamma * -math.log(pj + 1e-8)
                    cls = pos - neg
                else:
                    cls = -pj
                l1 = float(np.abs(boxes[b, q].astype(np.float64) - tb.astype(np.float64)).sum())
                giou = _giou64(boxes[b, q].astype(np.float64), tb.astype(np.float64))
                c[q, j] = w["cost_bbox"] * l1 + w["cost_class"] * cls - w["cost_giou"] * giou
        costs.append(c)
    return costs


def brute_force_min(c):
    """Minimum total cost of a one-to-one assignment of min(Q, n) pairs."""
    q, n = c.shape
    if n == 0 or q == 0:
        return 0.0
    if n <= q:
        return min(sum(c[r, j] for j, r in enumerate(rows)) for rows in itertools.permutations(range(q), n))
    return min(sum(c[i, col] for i, col in enumerate(cols)) for cols in itertools.permutations(range(n), q))


@st.composite
def problems(draw, max_q=5, max_n=4):
    """Small matching problems: logits, boxes, targets (zero-GT images allowed)."""
    bs = draw(st.integers(1, 3))
    q = draw(st.integers(1, max_q))
    c = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    counts = draw(st.lists(st.integers(0, max_n), min_size=bs, max_size=bs))
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (bs, q, c)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0.1, 0.9, (bs, q, 2)), rng.uniform(0.01, 0.5, (bs, q, 2))], -1).astype(np.float32)
    targets = [dict(labels=rng.integers(0, c, n).astype(np.int64),
                    boxes=np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.01, 0.5, (n, 2))], -1).astype(np.float32))
               for n in counts]
    return logits, boxes, targets


def run_reference(logits, boxes, targets, focal):
    matcher = HungarianMatcher(WEIGHTS, use_focal_loss=focal)
    with probes.recording() as rec:
        indices = matcher(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)),
                          [dict(labels=torch.tensor(t["labels"]), boxes=torch.tensor(t["boxes"])) for t in targets])
    return indices, dict(rec)


@pytest.mark.parametrize("focal", [True, False])
@given(problem=problems())
def test_cost_matrix_matches_independent_formula(focal, problem):
    logits, boxes, targets = problem
    _, rec = run_reference(logits, boxes, targets, focal)
    want = independent_costs(logits, boxes, targets, focal)
    for b, (got, exp) in enumerate(zip(rec["matcher.cost"], want)):
        assert got.shape == exp.shape
        # float32 vs float64 of O(10) costs: measured max abs 5.5e-6 (|logit| <~ 5, 300 cases). The
        # focal form's log(1 - p) amplifies p's float32 rounding (<= 2 ulp of 1: 1.2e-7) by
        # 1 / (1 - p) (cancellation the official float32 code has too), times 2 * 0.75.
        p = 1 / (1 + np.exp(-logits[b].astype(np.float64)))[:, targets[b]["labels"]]
        amplified = 2 * 0.75 * 1.2e-7 / np.maximum(1 - p, 1e-8) if focal else 0.0
        assert (np.abs(got - exp) <= 3e-5 + amplified).all(), (got, exp)


@pytest.mark.parametrize("focal", [True, False])
@given(problem=problems())
def test_assignment_is_optimal_against_brute_force(focal, problem):
    logits, boxes, targets = problem
    indices, rec = run_reference(logits, boxes, targets, focal)
    for (rows, cols), t, c32 in zip(indices, targets, rec["matcher.cost"]):
        rows, cols = rows.numpy(), cols.numpy()
        n, q = len(t["labels"]), logits.shape[1]
        assert len(rows) == len(cols) == min(n, q)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        # the solver sees the float32 costs (checked against the formula above); judged on
        # those, its optimum is exact up to float64 summation order (~1e-15)
        c = c32.astype(np.float64)
        assert c[rows, cols].sum() <= brute_force_min(c) + 1e-9


def test_output_format_and_empty_images():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 4)).astype(np.float32)
    boxes = np.full((3, 6, 4), 0.3, np.float32)
    targets = [dict(labels=np.array([3, 0], np.int64), boxes=np.array([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.4]], np.float32)),
               dict(labels=np.zeros(0, np.int64), boxes=np.zeros((0, 4), np.float32)),
               dict(labels=np.array([1], np.int64), boxes=np.array([[0.5, 0.5, 0.2, 0.2]], np.float32))]
    indices, rec = run_reference(logits, boxes, targets, True)
    assert [len(i) for i, _ in indices] == [2, 0, 1]
    for i, j in indices:
        assert i.dtype == torch.int64 and j.dtype == torch.int64
        assert (np.diff(i.numpy()) > 0).all()  # rows ascending (scipy's order)
    assert [c.shape for c in rec["matcher.cost"]] == [(6, 2), (6, 0), (6, 1)]
    assert rec["matcher.indices"] is not None


@pytest.mark.parametrize("focal", [True, False])
def test_whole_batch_without_targets(focal):
    logits = np.zeros((2, 5, 3), np.float32)
    boxes = np.full((2, 5, 4), 0.5, np.float32)
    targets = [dict(labels=np.zeros(0, np.int64), boxes=np.zeros((0, 4), np.float32))] * 2
    indices, _ = run_reference(logits, boxes, targets, focal)
    assert len(indices) == 2
    for i, j in indices:
        assert i.shape == (0,) and j.shape == (0,) and i.dtype == torch.int64


def test_more_targets_than_queries():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 2, 3)).astype(np.float32)
    boxes = np.full((1, 2, 4), 0.5, np.float32)
    targets = [dict(labels=np.array([0, 1, 2], np.int64), boxes=rng.uniform(0.2, 0.6, (3, 4)).astype(np.float32))]
    (rows, cols), = run_reference(logits, boxes, targets, True)[0]
    assert len(rows) == 2
    c = independent_costs(logits, boxes, targets, True)[0]
    assert c[rows.numpy(), cols.numpy()].sum() <= brute_force_min(c) + 1e-4


def test_indices_override_point():
    logits = np.zeros((1, 3, 2), np.float32)
    boxes = np.full((1, 3, 4), 0.5, np.float32)
    targets = [dict(labels=np.array([1], np.int64), boxes=np.array([[0.5, 0.5, 0.5, 0.5]], np.float32))]
    forced = [(np.array([2]), np.array([0]))]
    with probes.forcing({"matcher.indices": forced}):
        indices, rec = run_reference(logits, boxes, targets, True)
    assert indices[0][0].tolist() == [2] and indices[0][1].tolist() == [0]
    assert indices[0][0].dtype == torch.int64
    seen = []
    with probes.forcing({"matcher.indices": lambda idx: seen.append(idx) or [(np.array([1]), np.array([0]))]}):
        indices, _ = run_reference(logits, boxes, targets, True)
    assert len(seen) == 1 and indices[0][0].tolist() == [1]


def test_zero_weights_rejected():
    with pytest.raises(AssertionError):
        HungarianMatcher({"cost_class": 0, "cost_bbox": 0, "cost_giou": 0})
