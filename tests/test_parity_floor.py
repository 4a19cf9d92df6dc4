"""The float32 numerics verdict: ``compare_floor`` judges each element against the
reference's own per-block noise floor, and the cap turns a floor that swamps the
tensor's scale into "not judgeable in float32" rather than a pass."""
import math

import numpy as np
import pytest

from parity.compare import block_floor, compare_floor
from parity.tolerances import ToleranceConfigError, load_registry, parse_rule

REF = np.array([1.0, -2.0, 4.0, 0.5, 3.0, -1.0, 2.0, 0.25], dtype=np.float32)  # max|ref| = 4


def judge(test, floor, factor=10.0, atol=0.0, rtol=0.0, cap=None, block=1):
    return compare_floor("t", REF, np.asarray(test, np.float32), floor, factor, atol, rtol, cap, block)


def with_error(index, error):
    test = REF.astype(np.float64).copy()
    test[index] += error
    return test


def test_block_floor_spreads_the_largest_floor_over_its_block_only():
    floor = np.zeros(8)
    floor[1] = 3.0
    assert block_floor(floor, (8,), block=4).tolist() == [3, 3, 3, 3, 0, 0, 0, 0]
    assert block_floor(floor, (8,), block=1).tolist() == floor.tolist()
    assert block_floor(2.0, (2, 3), block=4).shape == (2, 3)  # a scalar floor broadcasts


def test_error_where_the_floor_is_zero_fails_although_another_element_has_a_large_floor():
    floor = np.zeros(8)
    floor[0] = 0.25  # the old tensor-wide maximum would have allowed 2.5 everywhere
    result = judge(with_error(7, 0.125), floor)
    assert result.verdict == "fail" and result.metrics["n_outside"] == 1


def test_error_within_factor_times_its_own_floor_passes():
    floor = np.zeros(8)
    floor[0] = 0.0625
    result = judge(with_error(0, 0.5), floor)  # 0.5 <= 10 x 0.0625
    assert result.verdict == "pass", result.note
    assert result.metrics["over_floor"] == pytest.approx(8.0)


def test_allowance_boundary_is_inclusive():
    floor = np.full(8, 0.0625)
    assert judge(with_error(2, 0.625), floor).verdict == "pass"       # exactly 10 x floor
    assert judge(with_error(2, 0.625 + 0.0005), floor).verdict == "fail"


def test_block_floor_excuses_neighbours_in_the_same_block():
    floor = np.zeros(8)
    floor[0] = 0.0625
    assert judge(with_error(3, 0.5), floor, block=4).verdict == "pass"   # same block as element 0
    assert judge(with_error(4, 0.5), floor, block=4).verdict == "fail"   # next block


def test_rtol_scales_with_the_tensor_maximum_and_atol_is_absolute():
    zero = np.zeros(8)
    assert judge(with_error(7, 3.9e-5), zero, rtol=1e-5).verdict == "pass"   # 1e-5 x max|ref| = 4e-5
    assert judge(with_error(7, 4.2e-5), zero, rtol=1e-5).verdict == "fail"
    assert judge(with_error(7, 0.9e-6), zero, atol=1e-6).verdict == "pass"
    assert judge(with_error(7, 1.2e-6), zero, atol=1e-6).verdict == "fail"


def test_cap_boundary_decides_judgeability():
    floor = np.zeros(8)
    floor[4] = 4e-3  # 1e-3 of max|ref|
    at_cap = judge(REF, floor, cap=1e-3)
    assert at_cap.verdict == "pass" and at_cap.judgeable
    over_cap = judge(REF, floor * (1 + 1e-6), cap=1e-3)
    assert over_cap.verdict == "not judgeable" and not over_cap.passed and not over_cap.judgeable
    assert "not judgeable in float32" in over_cap.note
    assert over_cap.metrics["floor_rel"] == pytest.approx(1e-3, rel=1e-5)


def test_over_the_cap_even_a_large_error_is_left_to_the_float64_verdict():
    floor = np.full(8, 0.5)  # floor_rel 0.125, far over the cap
    result = judge(with_error(1, 6.0), floor, cap=1e-4)
    assert result.verdict == "not judgeable" and result.metrics["n_outside"] == 1


def test_nonfinite_on_one_side_fails_and_says_so():
    test = REF.astype(np.float64).copy()
    test[3] = np.nan
    result = judge(test, np.ones(8))
    assert result.verdict == "fail" and math.isinf(result.metrics["tol_ratio"])
    assert "non-finite value(s) in the Jittor twin only" in result.note
    over_cap = judge(test, np.full(8, 0.5), cap=1e-4)  # one-sided NaN is never "not judgeable"
    assert over_cap.verdict == "fail"


def test_missing_or_misshapen_floor_fails():
    assert judge(REF, None).verdict == "fail"
    assert judge(REF, np.zeros(3)).verdict == "fail"


def test_floor_rule_needs_a_cap_and_only_floor_rules_take_one():
    with pytest.raises(ToleranceConfigError, match="cap"):
        parse_rule({"pattern": "*", "floor": 10, "reason": "r"})
    with pytest.raises(ToleranceConfigError, match="cap"):
        parse_rule({"pattern": "*", "atol": 1e-5, "cap": 1e-4, "reason": "r"})
    assert parse_rule({"pattern": "*", "floor": 10, "cap": 1e-4, "reason": "r"}).cap == 1e-4


def test_registry_has_one_rule_list_per_verdict():
    float32, float64 = load_registry(dtype="float32"), load_registry(dtype="float64")
    assert any(rule.kind == "floor" for rule in float32.rules)
    assert not any(rule.kind == "floor" for rule in float64.rules)
    with pytest.raises(ValueError):
        load_registry(dtype="float16")


def test_norm_budget_passes_a_localised_change_and_nothing_spread():
    big = np.ones(1000, np.float32)
    floor = np.full(1000, 1e-6)
    kinked = big.astype(np.float64).copy()
    kinked[17] += 0.02  # one element moved by its whole local gradient: norm-wise 0.02 / sqrt(1000) = 6.3e-4
    result = compare_floor("g", big, kinked.astype(np.float32), floor, 10.0, cap=1e-5, block=1000, norm_rel=1e-3)
    assert result.verdict == "pass" and "localised" in result.note
    assert result.metrics["tol_ratio"] == pytest.approx(0.632, rel=1e-2) and result.metrics["elementwise_tol_ratio"] > 1
    without = compare_floor("g", big, kinked.astype(np.float32), floor, 10.0, cap=1e-5, block=1000)
    assert without.verdict == "fail"
    spread = (big * (1 + 2e-3)).astype(np.float32)  # every element off by 2e-3: a bug, not a kink
    assert compare_floor("g", big, spread, floor, 10.0, cap=1e-5, block=1000, norm_rel=1e-3).verdict == "fail"


def test_norm_budget_does_not_make_an_unjudgeable_tensor_pass():
    floor = np.full(8, 1.0)  # a quarter of max|ref|: far above the cap
    result = compare_floor("g", REF, with_error(0, 1e-3).astype(np.float32), floor, 10.0, cap=1e-5, block=1,
                           norm_rel=1.0)
    assert result.verdict == "not judgeable"


def test_trained_weight_rules_take_part_only_in_trained_runs(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("float32:\n"
                    "  - {pattern: 'grad:*', weights: trained, floor: 10, cap: 1.0e-5, norm_rel: 1.0e-3, reason: t 1}\n"
                    "  - {pattern: '*', floor: 10, cap: 1.0e-4, reason: general 2}\n")
    trained, random = load_registry(str(path), weights="trained"), load_registry(str(path))
    assert trained.lookup("grad:w", with_floor=True).norm_rel == 1e-3
    assert random.lookup("grad:w", with_floor=True).cap == 1e-4
    assert trained.lookup("decoder.x", with_floor=True).cap == 1e-4  # the general rule still judges the rest
    result = trained.judge("grad:w", REF, REF, floor=np.zeros(8))
    assert result.rule == "grad:* [weights: trained]" and result.reason == "t 1"
    with pytest.raises(ValueError, match="weights"):
        load_registry(str(path), weights="pretrained")


@pytest.mark.parametrize("entry, fragment", [
    ({"pattern": "a", "floor": 10, "cap": 1e-5, "weights": "ema", "reason": "r"}, "weights must be one of"),
    ({"pattern": "a", "atol": 1.0, "norm_rel": 1e-3, "reason": "r"}, "unknown|exactly one|floor rule"),
])
def test_bad_weights_selector_or_misplaced_norm_budget_rejected(entry, fragment):
    with pytest.raises(ToleranceConfigError, match=fragment):
        parse_rule(entry)
