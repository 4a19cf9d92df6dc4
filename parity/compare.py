"""Tensor-by-tensor comparison of a reference array with a test array.

Every function here takes plain NumPy arrays (anything ``np.asarray`` accepts) and
returns a :class:`Result`; none raises on bad input. A shape or dtype-kind mismatch,
an invalid index set or an out-of-tolerance value is a *failed verdict* with a note
that says why, so one broken tensor never stops a parity run.

Kinds of comparison:

* ``compare_float``  element-wise ``|ref - test| <= atol + rtol * |ref|`` (activations).
* ``compare_norm``   norm-wise ``||ref - test|| / ||ref|| <= rel_tol`` (gradients).
* ``compare_exact``  exact equality (indices, labels, masks).
* ``compare_topk_selection`` / ``compare_assignment``  discrete decisions that may
  legitimately differ where scores or costs tie; a tie passes and is reported.

Every result carries ``metrics["tol_ratio"]``: how far the worst element is from its
tolerance (``<= 1`` passes, ``inf`` for a failed discrete check), which is what the
report ranks tensors by.
"""
import dataclasses
import math
from typing import Optional

import numpy as np

# Added to |ref| in the relative-error denominator so zeros in ref stay finite.
REL_DENOM_EPS = 1e-12
# Rule names that tie-aware comparisons report (they are judged by code, not by a YAML rule).
TOPK_RULE = "tie-aware:topk"
ASSIGNMENT_RULE = "tie-aware:assignment"

_NUMERIC_KINDS = "fiub"
_KIND_GROUP = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}


@dataclasses.dataclass
class Result:
    """The verdict on one tensor and the numbers it rests on.

    ``rule`` names the tolerance rule that judged it (a pattern from the registry,
    empty when the caller chose tolerances directly) and ``reason`` is that rule's
    justification; ``tolerance`` holds the thresholds actually applied.
    """
    name: str
    kind: str
    metrics: dict
    passed: bool
    rule: str = ""
    note: str = ""
    reason: str = ""
    tolerance: dict = dataclasses.field(default_factory=dict)
    shape: Optional[tuple] = None
    dtype: Optional[str] = None
    judgeable: bool = True

    @property
    def verdict(self):
        """'pass', 'fail', or 'not judgeable' (a float32 tensor whose noise floor swamps
        its scale and that is not outside its allowance: its float64 verdict decides)."""
        if self.passed:
            return "pass"
        return "fail" if self.judgeable else "not judgeable"

    def to_dict(self):
        """A JSON-ready dict; non-finite floats become the strings 'nan'/'inf'/'-inf'."""
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": None if self.shape is None else [int(n) for n in self.shape],
            "dtype": self.dtype,
            "metrics": json_safe(self.metrics),
            "passed": bool(self.passed),
            "verdict": self.verdict,
            "rule": self.rule,
            "reason": self.reason,
            "tolerance": json_safe(self.tolerance),
            "note": self.note,
        }


def json_safe(value):
    """``value`` with NumPy scalars made plain and non-finite floats made strings.

    ``float()`` reads the strings back ('nan', 'inf', '-inf'), so a report stays
    standard JSON and still round-trips.
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return number
    return value


def _dtype_text(ref, test):
    return str(ref.dtype) if ref.dtype == test.dtype else f"{ref.dtype} vs {test.dtype}"


def _layout_problem(ref, test):
    """Why ``ref`` and ``test`` cannot be compared element-wise, or None."""
    if ref.shape != test.shape:
        return f"shape mismatch: ref {tuple(ref.shape)} vs test {tuple(test.shape)}"
    for side, array in (("ref", ref), ("test", test)):
        if array.dtype.kind not in _NUMERIC_KINDS:
            return f"unsupported dtype on {side}: {array.dtype}"
    ref_group = _KIND_GROUP[ref.dtype.kind]
    test_group = _KIND_GROUP[test.dtype.kind]
    if ref_group != test_group:
        return f"dtype kind mismatch: ref {ref.dtype} ({ref_group}) vs test {test.dtype} ({test_group})"
    return None


def _layout_failure(name, kind, ref, test, problem, tolerance):
    return Result(name=name, kind=kind, passed=False, note=problem, tolerance=tolerance,
                  metrics={"tol_ratio": math.inf, "ref_shape": list(ref.shape),
                           "test_shape": list(test.shape)},
                  shape=tuple(ref.shape), dtype=_dtype_text(ref, test))


def _split_nonfinite(ref64, test64):
    """(mask of pairs where both are finite, count of non-finite pairs that disagree).

    NaN against NaN and the same infinity on both sides count as equal and are left
    out of the error metrics; any other non-finite pair is a disagreement.
    """
    finite = np.isfinite(ref64) & np.isfinite(test64)
    same_nan = np.isnan(ref64) & np.isnan(test64)
    same_inf = np.isinf(ref64) & (ref64 == test64)
    disagreeing = ~(finite | same_nan | same_inf)
    return finite, int(np.count_nonzero(disagreeing))


def nonfinite_note(ref, test):
    """Where NaN/Inf values disagree, in words: which side holds them (a tensor that is
    non-finite on one side only is reported as such, not as a large difference)."""
    ref64, test64 = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    ref_ok, test_ok = np.isfinite(ref64), np.isfinite(test64)
    parts = []
    only_test = int(np.count_nonzero(ref_ok & ~test_ok))
    only_ref = int(np.count_nonzero(~ref_ok & test_ok))
    both = int(np.count_nonzero(~ref_ok & ~test_ok & ~(np.isnan(ref64) & np.isnan(test64)) & (ref64 != test64)))
    if only_test:
        parts.append(f"{only_test} non-finite value(s) in the Jittor twin only")
    if only_ref:
        parts.append(f"{only_ref} non-finite value(s) in the reference only")
    if both:
        parts.append(f"{both} different non-finite value(s) on both sides")
    return "; ".join(parts)


def cosine_similarity(ref, test):
    """Cosine of the angle between the flattened arrays.

    Defined for zero vectors: both all-zero -> 1.0 (identical), exactly one
    all-zero -> 0.0 (nothing in common).
    """
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def _ratio(error, allowed):
    """error / allowed element-wise, with 0/0 -> 0 and x/0 -> inf."""
    error = np.asarray(error, dtype=np.float64)
    allowed = np.asarray(allowed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = error / allowed
    ratio = np.where(allowed == 0.0, np.where(error == 0.0, 0.0, np.inf), ratio)
    return ratio


def compare_float(name, ref, test, atol, rtol, relative_to="element"):
    """Element-wise closeness: every element must satisfy ``|ref-test| <= atol + rtol*|ref|``,
    or with ``relative_to="max"`` ``|ref-test| <= atol + rtol*max|ref|`` (the tensor's
    scale: for tensors whose elements cancel to near zero, such as gradients).

    Metrics: ``max_abs``, ``mean_abs``, ``max_rel`` (``|ref-test| / (|ref| + eps)``),
    ``cosine``, ``n_outside`` / ``frac_outside`` (elements breaking the rule),
    ``min_passing_atol`` (the smallest atol that passes at this rtol, up to
    rounding), ``nonfinite_mismatches``, ``tol_ratio`` (worst
    ``|ref-test| / (atol + rtol*|ref|)``) and ``allowed_abs`` (``max_abs / tol_ratio``:
    the tolerance expressed on the ``max_abs`` scale, so ``max_abs > allowed_abs``
    exactly when the tensor fails; ``atol + rtol*max|ref|`` when nothing differs).
    """
    ref, test = np.asarray(ref), np.asarray(test)
    tolerance = {"atol": float(atol), "rtol": float(rtol)}
    if relative_to not in ("element", "max"):
        raise ValueError(f"relative_to must be 'element' or 'max', not {relative_to!r}")
    if relative_to == "max":
        tolerance["relative_to"] = "max"
    problem = _layout_problem(ref, test)
    if problem:
        return _layout_failure(name, "float", ref, test, problem, tolerance)

    ref64, test64 = ref.astype(np.float64), test.astype(np.float64)
    finite, nonfinite_mismatches = _split_nonfinite(ref64, test64)
    ref_f, test_f = ref64[finite], test64[finite]
    error = np.abs(ref_f - test_f)
    scale = np.abs(ref_f)
    if relative_to == "max" and scale.size:
        scale = np.full_like(scale, scale.max())
    allowed = atol + rtol * scale
    n_outside = int(np.count_nonzero(error > allowed)) + nonfinite_mismatches

    if error.size:
        max_abs = float(error.max())
        mean_abs = float(error.mean())
        max_rel = float((error / (scale + REL_DENOM_EPS)).max())
        min_passing_atol = float(max(0.0, (error - rtol * scale).max()))
        ratios = _ratio(error, allowed)
        worst = int(np.argmax(ratios))
        tol_ratio = float(ratios[worst])
    else:
        max_abs = mean_abs = max_rel = min_passing_atol = tol_ratio = 0.0
    if nonfinite_mismatches:
        max_abs = max_rel = min_passing_atol = tol_ratio = math.inf

    if 0.0 < tol_ratio < math.inf:
        allowed_abs = max_abs / tol_ratio
    else:
        allowed_abs = float(atol + rtol * (scale.max() if scale.size else 0.0))

    passed = n_outside == 0
    note = ""
    if nonfinite_mismatches:
        note = nonfinite_note(ref64, test64)
    elif not passed:
        note = (f"{n_outside} of {ref.size} element(s) outside atol {atol:g} + rtol {rtol:g}*"
                f"{'max|ref|' if relative_to == 'max' else '|ref|'}")
    metrics = {
        "max_abs": max_abs,
        "mean_abs": mean_abs,
        "max_rel": max_rel,
        "cosine": cosine_similarity(ref_f, test_f),
        "n_outside": n_outside,
        "frac_outside": n_outside / ref.size if ref.size else 0.0,
        "min_passing_atol": min_passing_atol,
        "nonfinite_mismatches": nonfinite_mismatches,
        "tol_ratio": tol_ratio,
        "allowed_abs": allowed_abs,
    }
    return Result(name=name, kind="float", metrics=metrics, passed=passed, note=note,
                  tolerance=tolerance, shape=tuple(ref.shape), dtype=_dtype_text(ref, test))


def compare_norm(name, ref, test, rel_tol):
    """Norm-wise closeness: ``||ref - test|| / ||ref|| <= rel_tol`` (for gradients).

    A zero ``ref`` passes only against an exactly zero difference. Non-finite values
    are handled as in :func:`compare_float`.
    """
    ref, test = np.asarray(ref), np.asarray(test)
    tolerance = {"rel": float(rel_tol)}
    problem = _layout_problem(ref, test)
    if problem:
        return _layout_failure(name, "norm", ref, test, problem, tolerance)

    ref64, test64 = ref.astype(np.float64), test.astype(np.float64)
    finite, nonfinite_mismatches = _split_nonfinite(ref64, test64)
    ref_f, test_f = ref64[finite], test64[finite]
    difference = ref_f - test_f
    diff_norm = float(np.linalg.norm(difference))
    ref_norm = float(np.linalg.norm(ref_f))
    rel_norm = float(_ratio(diff_norm, ref_norm))
    max_abs = float(np.abs(difference).max()) if difference.size else 0.0
    if nonfinite_mismatches:
        rel_norm = max_abs = math.inf
    tol_ratio = float(_ratio(rel_norm, rel_tol))
    allowed_abs = max_abs / tol_ratio if 0.0 < tol_ratio < math.inf else None

    passed = rel_norm <= rel_tol
    note = ""
    if nonfinite_mismatches:
        note = nonfinite_note(ref64, test64)
    elif not passed:
        note = f"relative norm error {rel_norm:.3g} > {rel_tol:g}"
    metrics = {
        "rel_norm": rel_norm,
        "diff_norm": diff_norm,
        "ref_norm": ref_norm,
        "max_abs": max_abs,
        "cosine": cosine_similarity(ref_f, test_f),
        "nonfinite_mismatches": nonfinite_mismatches,
        "tol_ratio": tol_ratio,
        "allowed_abs": allowed_abs,
    }
    return Result(name=name, kind="norm", metrics=metrics, passed=passed, note=note,
                  tolerance=tolerance, shape=tuple(ref.shape), dtype=_dtype_text(ref, test))


def compare_exact(name, ref, test):
    """Exact equality, for integer, index and boolean tensors (NaN equals NaN).

    Integer widths may differ (Jittor may hand back int32 where torch has int64);
    integer against bool or float is a dtype-kind mismatch.
    """
    ref, test = np.asarray(ref), np.asarray(test)
    tolerance = {"exact": True}
    problem = _layout_problem(ref, test)
    if problem:
        return _layout_failure(name, "exact", ref, test, problem, tolerance)

    if ref.dtype.kind == "f":
        equal = (ref == test) | (np.isnan(ref) & np.isnan(test))
    else:
        equal = ref == test
    n_mismatch = int(np.count_nonzero(~equal))
    metrics = {"n_mismatch": n_mismatch,
               "frac_mismatch": n_mismatch / ref.size if ref.size else 0.0,
               "tol_ratio": math.inf if n_mismatch else 0.0}
    note = ""
    if n_mismatch:
        first = np.unravel_index(int(np.argmin(equal.ravel())), ref.shape)
        metrics["first_mismatch"] = [int(i) for i in first]
        metrics["first_mismatch_values"] = [ref[first].item(), test[first].item()]
        if ref.dtype.kind != "b":
            wide = np.abs(ref.astype(np.float64) - test.astype(np.float64))
            metrics["max_abs"] = float(np.nanmax(wide)) if np.isfinite(wide).any() else math.inf
        note = f"{n_mismatch} of {ref.size} element(s) differ; first at {tuple(metrics['first_mismatch'])}"
    else:
        metrics["max_abs"] = 0.0
    return Result(name=name, kind="exact", metrics=metrics, passed=n_mismatch == 0, note=note,
                  tolerance=tolerance, shape=tuple(ref.shape), dtype=_dtype_text(ref, test))


def _index_problem(indices, size, side):
    """Why ``indices`` is not a valid selection from ``range(size)``, or None."""
    if indices.dtype.kind not in "iu":
        return f"{side} indices are not integers ({indices.dtype})"
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        return f"{side} index out of range [0, {size})"
    if np.unique(indices).size != indices.size:
        return f"{side} indices repeat"
    return None


def compare_topk_selection(ref_idx, test_idx, scores, atol=0.0, name="probe:decoder.topk_ind"):
    """Top-k selections that may differ only where scores tie at the k-th boundary.

    ``ref_idx``/``test_idx``: ``(k,)`` or ``(B, k)`` selected indices; ``scores``:
    ``(N,)`` or ``(B, N)`` the scores the selection was made on. A row passes when
    its selected index *sets* are equal, or when the sorted selected scores agree
    within ``atol`` (then the differing indices are tied and counted in
    ``tied_swaps``). ``order_changes`` counts positions holding different indices.
    """
    ref_idx, test_idx, scores = np.asarray(ref_idx), np.asarray(test_idx), np.asarray(scores)
    tolerance = {"score_atol": float(atol)}
    base = {"name": name, "kind": "topk", "tolerance": tolerance, "rule": TOPK_RULE,
            "reason": "top-k sets may differ only where scores tie at the k-th boundary",
            "shape": tuple(ref_idx.shape), "dtype": _dtype_text(ref_idx, test_idx)}
    if ref_idx.shape != test_idx.shape:
        problem = f"shape mismatch: ref {tuple(ref_idx.shape)} vs test {tuple(test_idx.shape)}"
        return Result(metrics={"tol_ratio": math.inf}, passed=False, note=problem, **base)
    if ref_idx.ndim == 1:
        ref_idx, test_idx, scores = ref_idx[None], test_idx[None], scores[None]
    if ref_idx.ndim != 2 or scores.ndim != 2 or scores.shape[0] != ref_idx.shape[0]:
        problem = (f"expected (B, k) indices and (B, N) scores; got indices "
                   f"{tuple(ref_idx.shape)}, scores {tuple(scores.shape)}")
        return Result(metrics={"tol_ratio": math.inf}, passed=False, note=problem, **base)

    tied_swaps = rows_with_ties = order_changes = 0
    max_score_gap = 0.0
    failures = []
    for row, (ref_row, test_row, row_scores) in enumerate(zip(ref_idx, test_idx, scores)):
        problem = (_index_problem(ref_row, row_scores.size, "ref")
                   or _index_problem(test_row, row_scores.size, "test"))
        if problem:
            failures.append(f"row {row}: {problem}")
            continue
        order_changes += int(np.count_nonzero(ref_row != test_row))
        swapped = len(set(ref_row.tolist()) - set(test_row.tolist()))
        gap = float(np.max(np.abs(np.sort(row_scores[ref_row].astype(np.float64))
                                  - np.sort(row_scores[test_row].astype(np.float64))),
                           initial=0.0))
        max_score_gap = max(max_score_gap, gap)
        if swapped == 0:
            continue
        if gap <= atol:
            tied_swaps += swapped
            rows_with_ties += 1
        else:
            failures.append(f"row {row}: {swapped} index(es) differ with score gap {gap:.3g} > {atol:g}")

    passed = not failures
    metrics = {"rows": int(ref_idx.shape[0]), "k": int(ref_idx.shape[1]),
               "tied_swaps": tied_swaps, "rows_with_ties": rows_with_ties,
               "order_changes": order_changes, "max_score_gap": max_score_gap,
               "tol_ratio": 0.0 if passed else math.inf}
    if failures:
        note = "; ".join(failures)
    elif tied_swaps:
        note = (f"tie: {tied_swaps} selected index(es) differ in {rows_with_ties} row(s), "
                f"all at tied scores (gap <= {atol:g})")
    else:
        note = "identical selection" if order_changes == 0 else "same sets, different order"
    return Result(metrics=metrics, passed=passed, note=note, **base)


def _assignment_problem(rows, cols, cost_shape, side):
    """Why (rows, cols) is not a valid one-to-one assignment into ``cost``, or None."""
    if rows.ndim != 1 or cols.ndim != 1 or rows.size != cols.size:
        return f"{side} rows/cols must be 1-D and of equal length; got {rows.shape}, {cols.shape}"
    return (_index_problem(rows, cost_shape[0], f"{side} row")
            or _index_problem(cols, cost_shape[1], f"{side} col"))


def compare_assignment(ref_rows, ref_cols, test_rows, test_cols, cost, atol=0.0,
                       name="probe:matcher.indices"):
    """Hungarian-matcher outputs for one image, judged on the reference ``cost`` matrix.

    Same (row, col) pairs -> pass. Different pairs of equal total cost (within
    ``atol``) -> pass, reported as a tie (``metrics["tie"]``). Anything else fails.
    """
    arrays = [np.asarray(a) for a in (ref_rows, ref_cols, test_rows, test_cols)]
    ref_rows, ref_cols, test_rows, test_cols = arrays
    cost = np.asarray(cost, dtype=np.float64)
    tolerance = {"cost_atol": float(atol)}
    base = {"name": name, "kind": "assignment", "tolerance": tolerance, "rule": ASSIGNMENT_RULE,
            "reason": "a different matching of equal total cost is an equally optimal answer",
            "shape": tuple(ref_rows.shape), "dtype": _dtype_text(ref_rows, test_rows)}

    problem = None
    if cost.ndim != 2:
        problem = f"cost must be 2-D; got shape {cost.shape}"
    problem = (problem or _assignment_problem(ref_rows, ref_cols, cost.shape, "ref")
               or _assignment_problem(test_rows, test_cols, cost.shape, "test"))
    if problem is None and ref_rows.size != test_rows.size:
        problem = f"different number of matches: ref {ref_rows.size} vs test {test_rows.size}"
    if problem:
        return Result(metrics={"tie": False, "tol_ratio": math.inf}, passed=False,
                      note=problem, **base)

    ref_pairs = set(zip(ref_rows.tolist(), ref_cols.tolist()))
    test_pairs = set(zip(test_rows.tolist(), test_cols.tolist()))
    ref_total = float(cost[ref_rows, ref_cols].sum())
    test_total = float(cost[test_rows, test_cols].sum())
    cost_gap = abs(ref_total - test_total)
    differing_pairs = len(ref_pairs - test_pairs)
    identical = differing_pairs == 0
    tie = not identical and cost_gap <= atol
    passed = identical or tie
    metrics = {"pairs": len(ref_pairs), "differing_pairs": differing_pairs,
               "ref_total_cost": ref_total, "test_total_cost": test_total,
               "cost_gap": cost_gap, "tie": tie, "tol_ratio": 0.0 if passed else math.inf}
    if identical:
        note = "identical assignment"
    elif tie:
        note = (f"tie: {differing_pairs} pair(s) differ but total cost is equal "
                f"(gap {cost_gap:.3g} <= {atol:g})")
    else:
        note = (f"{differing_pairs} pair(s) differ and total cost differs: ref {ref_total:.6g} "
                f"vs test {test_total:.6g} (gap {cost_gap:.3g} > {atol:g})")
    return Result(metrics=metrics, passed=passed, note=note, **base)


# Elements per block of a floor array: the reference's one-ulp sensitivity of one
# element is a noisy estimate of its neighbours' (three perturbed runs); the largest
# over a block of consecutive elements (a row segment of one channel) is the estimate.
FLOOR_BLOCK = 16


def block_floor(floor, shape, block=FLOOR_BLOCK):
    """``floor`` (a scalar or an array of ``shape``) as a per-element array where each
    element holds the largest floor of its block of ``block`` consecutive elements."""
    floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), shape).ravel()
    if floor.size == 0 or block <= 1:
        return floor.reshape(shape)
    padded = np.pad(floor, (0, (-floor.size) % block))
    blocks = padded.reshape(-1, block).max(axis=1)
    return np.repeat(blocks, block)[:floor.size].reshape(shape)


def compare_floor(name, ref, test, floor, factor, atol=0.0, rtol=0.0, cap=None, block=FLOOR_BLOCK, norm_rel=None):
    """Judge a float32 tensor against the reference's own sensitivity, element by element.

    ``floor`` is ``|ref - ref_perturbed|`` per element (or a scalar): how far the
    reference itself moves when its input moves by one float32 ulp, the largest over
    the perturbed runs. Element ``i`` passes when
    ``|ref_i - test_i| <= factor * blockfloor_i + atol + rtol * max|ref|``, where
    ``blockfloor_i`` is the largest floor in ``i``'s block (see :func:`block_floor`).

    ``cap`` bounds how much the floor may excuse: when the largest floor exceeds
    ``cap * max|ref|`` the tensor is *not judgeable in float32* (``judgeable`` False,
    ``passed`` False): its float64 verdict decides. A tensor outside its allowance
    fails whatever the cap. ``floor=None`` (no perturbed run) fails with a note.

    ``norm_rel`` (optional) is a budget for a *localised* change: a judgeable tensor with
    elements beyond their allowance still passes when ``||ref - test|| / ||ref||`` is
    within it (a ReLU or sampling kink flipped by rounding in one framework and in none
    of the floor runs moves a few gradient elements by their whole local gradient);
    ``tol_ratio`` is then the norm-wise error over the budget.
    """
    ref, test = np.asarray(ref), np.asarray(test)
    tolerance = {"floor_factor": float(factor), "atol": float(atol), "rtol": float(rtol),
                 "cap": None if cap is None else float(cap), "block": int(block)}
    if norm_rel is not None:
        tolerance["norm_rel"] = float(norm_rel)
    problem = _layout_problem(ref, test)
    if problem is None and floor is None:
        problem = "a floor rule needs the reference's perturbed run (run with the noise floor measured)"
    if problem is None and np.size(floor) not in (1, ref.size):
        problem = f"floor has {np.size(floor)} elements for a tensor of {ref.size}"
    if problem:
        return _layout_failure(name, "floor", ref, test, problem, tolerance)
    ref64, test64 = ref.astype(np.float64), test.astype(np.float64)
    floor64 = block_floor(np.asarray(floor).reshape(ref.shape) if np.size(floor) == ref.size else floor,
                          ref.shape, block)
    finite, nonfinite_mismatches = _split_nonfinite(ref64, test64)
    difference = np.abs(ref64[finite] - test64[finite])
    floor_f = floor64[finite]
    scale = float(np.abs(ref64[finite]).max()) if difference.size else 0.0
    allowed = factor * floor_f + atol + rtol * scale
    n_outside = int(np.count_nonzero(difference > allowed)) + nonfinite_mismatches
    max_floor = float(floor_f.max()) if floor_f.size else 0.0
    floor_rel = float(_ratio(max_floor, scale))
    if difference.size:
        ratios = _ratio(difference, allowed)
        worst = int(np.argmax(ratios))
        tol_ratio, max_abs = float(ratios[worst]), float(difference.max())
        allowed_abs = float(allowed[worst])
        over_floor = float(_ratio(difference, floor_f).max())
    else:
        tol_ratio = max_abs = over_floor = 0.0
        allowed_abs = float(atol)
    if nonfinite_mismatches:
        tol_ratio = max_abs = over_floor = math.inf
    judgeable = nonfinite_mismatches > 0 or cap is None or max_floor <= cap * scale
    ref_finite = np.abs(ref64[finite])
    ref_norm = float(np.linalg.norm(ref_finite))
    diff_norm = float(np.linalg.norm(difference))
    rel_norm = float(_ratio(diff_norm, ref_norm))
    localised = (norm_rel is not None and n_outside > 0 and not nonfinite_mismatches and judgeable
                 and rel_norm <= norm_rel)
    elementwise_ratio = tol_ratio
    if localised:
        tol_ratio = float(_ratio(rel_norm, norm_rel))
        allowed_abs = max_abs / tol_ratio if tol_ratio > 0 else allowed_abs
    passed = (n_outside == 0 or localised) and judgeable
    if nonfinite_mismatches:
        note = nonfinite_note(ref64, test64)
    elif localised:
        note = (f"{n_outside} of {ref.size} element(s) beyond their floor allowance (worst {elementwise_ratio:.3g}x), "
                f"norm-wise error {rel_norm:.3g} within the {norm_rel:g} budget for a localised change "
                f"(a kink flipped by rounding)")
    elif n_outside and judgeable:
        note = (f"{n_outside} of {ref.size} element(s) beyond {factor:g} x their block floor + {atol:g} "
                f"+ {rtol:g} x max|ref| (worst {max_abs:.3g} against {allowed_abs:.3g})")
    elif not judgeable:
        note = (f"not judgeable in float32: the reference's own floor reaches {floor_rel:.3g} of the "
                f"tensor's scale (cap {cap:g}); the float64 verdict decides"
                + (f" ({n_outside} element(s) beyond the floor allowance, worst {tol_ratio:.3g}x)" if n_outside else ""))
    else:
        note = ""
    metrics = {"max_abs": max_abs, "scale": scale, "floor": max_floor, "floor_rel": floor_rel, "over_floor": over_floor,
               "mean_abs": float(difference.mean()) if difference.size else 0.0,
               "max_rel": float((difference / (ref_finite + REL_DENOM_EPS)).max()) if difference.size else 0.0,
               "rel_norm": rel_norm, "elementwise_tol_ratio": elementwise_ratio,
               "cosine": cosine_similarity(ref64[finite], test64[finite]),
               "n_outside": n_outside, "frac_outside": n_outside / max(ref.size, 1),
               "nonfinite_mismatches": nonfinite_mismatches, "tol_ratio": tol_ratio, "allowed_abs": allowed_abs}
    return Result(name=name, kind="floor", metrics=metrics, passed=passed, note=note, judgeable=judgeable,
                  tolerance=tolerance, shape=tuple(ref.shape), dtype=_dtype_text(ref, test))
