"""Unit tests for parity.compare: metrics on hand-computed examples, verdict
boundaries, NaN/Inf handling, layout mismatches and tie-aware decisions."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity.compare import (compare_assignment, compare_exact, compare_float, compare_norm,
                            compare_topk_selection, cosine_similarity)
from tests.strategies import st_floats

# Every value below is a dyadic rational (exact in binary), so equality checks are exact.
# A nudge "just below" a threshold is 2**-30: a single-ulp nudge of atol would be lost
# when atol + rtol*|ref| is rounded, which is float64 arithmetic, not the rule.
NUDGE = 2 ** -30
REF = np.array([1.0, 2.0, 4.0])
TEST = np.array([1.5, 2.0, 3.0])


def test_float_metrics_match_hand_computation():
    # diffs [0.5, 0, 1]; allowed = 0.125 + 0.25*|ref| = [0.375, 0.625, 1.125]
    result = compare_float("t", REF, TEST, atol=0.125, rtol=0.25)
    m = result.metrics
    assert m["max_abs"] == 1.0
    assert m["mean_abs"] == 0.5
    assert m["max_rel"] == pytest.approx(0.5, rel=1e-9)  # 1e-12 added to |ref| in the denominator
    assert m["n_outside"] == 1
    assert m["frac_outside"] == pytest.approx(1 / 3, rel=1e-15)  # 1/3 is not exact in binary
    assert m["min_passing_atol"] == 0.25  # max(0.5-0.25, 0-0.5, 1-1)
    assert m["tol_ratio"] == pytest.approx(0.5 / 0.375, rel=1e-15)  # one division's rounding
    assert m["allowed_abs"] == pytest.approx(0.75, rel=1e-15)  # max_abs / (4/3), one rounding
    dot = 1 * 1.5 + 2 * 2 + 4 * 3
    expected_cosine = dot / math.sqrt((1 + 4 + 16) * (2.25 + 4 + 9))
    assert m["cosine"] == pytest.approx(expected_cosine, rel=1e-12)  # summation-order rounding
    assert not result.passed
    assert result.kind == "float" and result.shape == (3,)


def test_float_passes_with_the_min_passing_atol_reported():
    assert compare_float("t", REF, TEST, atol=0.25, rtol=0.25).passed
    assert not compare_float("t", REF, TEST, atol=0.25 - NUDGE, rtol=0.25).passed


def test_float_verdict_flips_exactly_at_the_boundary():
    ref = np.array([1.0])
    # allowed = 0.25 + 0.25*1 = 0.5, and |1.5 - 1| = 0.5 exactly: on the boundary passes
    assert compare_float("t", ref, np.array([1.5]), atol=0.25, rtol=0.25).passed
    assert not compare_float("t", ref, np.array([1.5 + NUDGE]), atol=0.25, rtol=0.25).passed
    assert not compare_float("t", ref, np.array([1.5]), atol=0.25 - NUDGE, rtol=0.25).passed
    assert not compare_float("t", ref, np.array([1.5]), atol=0.25, rtol=0.25 - NUDGE).passed


def test_float_nan_in_the_same_places_is_equal():
    ref = np.array([np.nan, 1.0, 2.0], dtype=np.float32)
    test = np.array([np.nan, 1.0, 2.5], dtype=np.float32)
    result = compare_float("t", ref, test, atol=1.0, rtol=0.0)
    assert result.passed
    assert result.metrics["nonfinite_mismatches"] == 0
    assert result.metrics["max_abs"] == 0.5


@pytest.mark.parametrize("ref_value, test_value, side", [
    (np.nan, 1.0, "in the reference only"), (1.0, np.nan, "in the Jittor twin only"),
    (np.inf, -np.inf, "on both sides"), (np.nan, np.inf, "on both sides"), (np.inf, 1e30, "in the reference only")])
def test_float_unmatched_nonfinite_fails_and_names_the_side(ref_value, test_value, side):
    ref = np.array([0.0, ref_value])
    test = np.array([0.0, test_value])
    result = compare_float("t", ref, test, atol=1e30, rtol=1e30)
    assert not result.passed
    assert result.metrics["nonfinite_mismatches"] == 1
    assert result.metrics["max_abs"] == math.inf
    assert side in result.note, result.note


def test_float_equal_infinities_pass():
    ref = np.array([np.inf, -np.inf, 3.0])
    result = compare_float("t", ref, ref.copy(), atol=0.0, rtol=0.0)
    assert result.passed and result.metrics["max_abs"] == 0.0


def test_shape_mismatch_is_a_failed_verdict_not_an_exception():
    for compare in (lambda a, b: compare_float("t", a, b, 1.0, 1.0),
                    lambda a, b: compare_norm("t", a, b, 1.0),
                    lambda a, b: compare_exact("t", a, b)):
        result = compare(np.zeros((2, 3)), np.zeros((3, 2)))
        assert not result.passed
        assert "shape mismatch" in result.note and "(2, 3)" in result.note
        assert result.metrics["tol_ratio"] == math.inf


def test_dtype_kind_mismatch_is_a_failed_verdict():
    result = compare_float("t", np.zeros(3, np.float32), np.zeros(3, np.int64), 1.0, 1.0)
    assert not result.passed and "dtype kind mismatch" in result.note
    result = compare_exact("t", np.zeros(3, np.int64), np.zeros(3, bool))
    assert not result.passed and "dtype kind mismatch" in result.note


def test_cosine_is_defined_for_zero_tensors():
    assert cosine_similarity(np.zeros(4), np.zeros(4)) == 1.0
    assert cosine_similarity(np.zeros(4), np.ones(4)) == 0.0
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0, abs=1e-15)  # one rounding


def test_norm_relative_error_and_boundary():
    # ||ref|| = 4, ||ref - test|| = 1 -> 0.25 exactly
    ref, test = np.array([0.0, 4.0]), np.array([0.0, 5.0])
    result = compare_norm("g", ref, test, rel_tol=0.25)
    assert result.passed and result.kind == "norm"
    assert result.metrics["rel_norm"] == 0.25
    assert result.metrics["diff_norm"] == 1.0 and result.metrics["ref_norm"] == 4.0
    assert not compare_norm("g", ref, test, rel_tol=np.nextafter(0.25, 0)).passed


def test_norm_with_zero_reference():
    assert compare_norm("g", np.zeros(3), np.zeros(3), rel_tol=0.0).passed
    result = compare_norm("g", np.zeros(3), np.array([0.0, 1e-30, 0.0]), rel_tol=1e9)
    assert not result.passed and result.metrics["rel_norm"] == math.inf


def test_exact_counts_mismatches_and_accepts_int_widths():
    result = compare_exact("i", np.array([1, 2, 3], np.int64), np.array([1, 5, 3], np.int32))
    assert not result.passed
    assert result.metrics["n_mismatch"] == 1
    assert result.metrics["first_mismatch"] == [1]
    assert result.metrics["first_mismatch_values"] == [2, 5]
    assert compare_exact("i", np.array([[True, False]]), np.array([[True, False]])).passed


def test_topk_tie_at_the_boundary_passes_and_is_reported():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    result = compare_topk_selection([0, 1], [0, 2], scores)
    assert result.passed
    assert result.metrics["tied_swaps"] == 1 and result.metrics["rows_with_ties"] == 1
    assert "tie" in result.note


def test_topk_untied_difference_fails():
    scores = np.array([0.9, 0.5, 0.4, 0.1])
    result = compare_topk_selection([0, 1], [0, 2], scores)
    assert not result.passed
    assert result.metrics["tied_swaps"] == 0


def test_topk_tie_within_the_callers_atol():
    scores = np.array([0.9, 0.5, 0.5 + 2 ** -20, 0.1])
    assert compare_topk_selection([0, 2], [0, 1], scores, atol=2 ** -19).passed
    assert not compare_topk_selection([0, 2], [0, 1], scores, atol=0.0).passed


def test_topk_repeated_index_fails_even_with_equal_scores():
    scores = np.array([0.5, 0.5, 0.1])
    result = compare_topk_selection([0, 1], [0, 0], scores)
    assert not result.passed and "repeat" in result.note


def test_topk_batched_rows_counted_separately():
    scores = np.array([[3.0, 2.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    ref = np.array([[0, 1], [0, 1]])
    passing = compare_topk_selection(ref, np.array([[0, 2], [1, 0]]), scores)
    assert passing.passed
    assert passing.metrics["rows_with_ties"] == 1
    assert passing.metrics["order_changes"] == 3  # row 0 position 1, row 1 both positions
    failing = compare_topk_selection(ref, np.array([[0, 2], [0, 2]]), scores)
    assert not failing.passed and "row 1" in failing.note


def test_assignment_identical_passes_without_tie():
    cost = np.array([[1.0, 2.0], [2.0, 1.0]])
    result = compare_assignment([0, 1], [0, 1], [0, 1], [0, 1], cost)
    assert result.passed and result.metrics["tie"] is False


def test_assignment_equal_cost_different_pairs_is_a_tie():
    cost = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    result = compare_assignment([0, 1], [0, 1], [0, 1], [1, 0], cost)
    assert result.passed and result.metrics["tie"] is True
    assert result.metrics["differing_pairs"] == 2
    assert "tie" in result.note


def test_assignment_unequal_cost_fails():
    cost = np.array([[1.0, 2.0], [2.0, 1.0]])
    result = compare_assignment([0, 1], [0, 1], [0, 1], [1, 0], cost)
    assert not result.passed
    assert result.metrics["ref_total_cost"] == 2.0 and result.metrics["test_total_cost"] == 4.0


def test_assignment_cost_gap_within_atol_is_a_tie():
    cost = np.array([[1.0, 1.0 + 2 ** -20], [1.0, 1.0]])
    assert compare_assignment([0, 1], [0, 1], [0, 1], [1, 0], cost, atol=2 ** -19).passed
    assert not compare_assignment([0, 1], [0, 1], [0, 1], [1, 0], cost, atol=0.0).passed


@pytest.mark.parametrize("test_rows, test_cols, fragment", [
    ([0, 1], [0, 0], "repeat"), ([0], [0], "number of matches"), ([0, 7], [0, 1], "out of range")])
def test_assignment_invalid_test_side_fails(test_rows, test_cols, fragment):
    cost = np.ones((3, 2))
    result = compare_assignment([0, 1], [0, 1], test_rows, test_cols, cost)
    assert not result.passed and fragment in result.note


finite_arrays = hnp.arrays(
    dtype=np.float64, shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    elements=st_floats(-1e3, 1e3, allow_nan=False))


@given(hnp.arrays(dtype=np.float32, shape=hnp.array_shapes(max_dims=3, max_side=5),
                  elements=st_floats(width=32, allow_nan=True, allow_infinity=True)))
def test_identical_arrays_always_pass(array):
    result = compare_float("t", array, array.copy(), atol=0.0, rtol=0.0)
    assert result.passed
    assert result.metrics["max_abs"] == 0.0


@given(finite_arrays, st_floats(1e-6, 1.0), st_floats(0.0, 1.0), st.data(), st_floats(0.01, 10.0))
def test_perturbation_beyond_tolerance_always_fails(ref, atol, rtol, data, excess):
    index = data.draw(st.integers(0, ref.size - 1))
    test = ref.copy().ravel()
    sign = data.draw(st.sampled_from([-1.0, 1.0]))
    test[index] += sign * (atol + rtol * abs(test[index])) * (1.0 + excess)
    result = compare_float("t", ref, test.reshape(ref.shape), atol=atol, rtol=rtol)
    assert not result.passed
    assert result.metrics["n_outside"] == 1


@given(finite_arrays, st_floats(1e-6, 1.0), st_floats(0.0, 1.0), st.data())
def test_perturbation_inside_tolerance_always_passes(ref, atol, rtol, data):
    fractions = data.draw(hnp.arrays(np.float64, ref.shape, elements=st_floats(-0.99, 0.99)))
    test = ref + fractions * (atol + rtol * np.abs(ref))
    result = compare_float("t", ref, test, atol=atol, rtol=rtol)
    assert result.passed
    assert result.metrics["tol_ratio"] <= 1.0
