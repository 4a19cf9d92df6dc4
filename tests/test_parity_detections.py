"""Unit tests of parity.detections: matching two frameworks' detections box by box."""
import numpy as np
import pytest

from parity.detections import Detections, agreement, box_iou, match


def dets(rows):
    """Detections from (label, score, x1, y1, x2, y2) rows."""
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(rows[:, 0].astype(np.int64), rows[:, 2:], rows[:, 1])


REF = dets([(0, 0.9, 10, 10, 50, 50), (1, 0.8, 60, 60, 100, 120), (0, 0.2, 0, 0, 20, 20)])


def test_iou_of_known_boxes():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def test_identical_sets_agree_whatever_their_order():
    test = dets([(0, 0.2, 0, 0, 20, 20), (0, 0.9, 10, 10, 50, 50), (1, 0.8, 60, 60, 100, 120)])
    figures = agreement(REF, test, (200, 150))
    assert figures["agree"] and figures["matched"] == 3 and figures["max_box_diff_px"] == 0.0
    assert sorted(match(REF, test)) == [(0, 1), (1, 2), (2, 0)]


def test_small_differences_are_measured_in_pixels_and_judged():
    test = dets([(0, 0.9 + 1e-6, 10, 10, 50, 50.0005), (1, 0.8, 60, 60, 100, 120), (0, 0.2, 0, 0, 20, 20)])
    figures = agreement(REF, test, (200, 150))
    assert figures["max_box_diff_px"] == pytest.approx(5e-4) and figures["max_score_diff"] == pytest.approx(1e-6)
    assert figures["agree"]
    moved = dets([(0, 0.9, 10, 10, 50, 52), (1, 0.8, 60, 60, 100, 120), (0, 0.2, 0, 0, 20, 20)])
    figures = agreement(REF, moved, (200, 150))
    assert not figures["agree"] and figures["matched"] == 3
    assert "box differs by 2 px" in figures["problems"][0]
    rescored = dets([(0, 0.91, 10, 10, 50, 50), (1, 0.8, 60, 60, 100, 120), (0, 0.2, 0, 0, 20, 20)])
    assert any("score differs" in p for p in agreement(REF, rescored, (200, 150))["problems"])


def test_a_different_label_is_not_a_match():
    test = dets([(2, 0.9, 10, 10, 50, 50), (1, 0.8, 60, 60, 100, 120), (0, 0.2, 0, 0, 20, 20)])
    figures = agreement(REF, test, (200, 150))
    assert not figures["agree"] and figures["matched"] == 2
    assert [e["label"] for e in figures["unmatched_reference"]] == [0]
    assert [e["label"] for e in figures["unmatched_jittor"]] == [2]
    assert not figures["unmatched_reference"][0]["at_cutoff"]


def test_a_swap_at_the_top_k_cut_off_is_excused():
    # Both kept two of three tied candidates at score 0.2: different members of a tie.
    test = dets([(0, 0.9, 10, 10, 50, 50), (1, 0.8, 60, 60, 100, 120), (3, 0.2, 150, 100, 190, 140)])
    figures = agreement(REF, test, (200, 150))
    assert figures["agree"] and figures["matched"] == 2
    assert figures["unmatched_reference"][0]["at_cutoff"] and figures["unmatched_jittor"][0]["at_cutoff"]


def test_empty_sides():
    empty = dets([])
    assert agreement(empty, empty, (10, 10))["agree"]
    figures = agreement(REF, empty, (200, 150))
    assert not figures["agree"] and len(figures["unmatched_reference"]) == 3
