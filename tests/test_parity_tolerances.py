"""Unit tests for parity.tolerances: rule parsing and validation, first-match lookup,
dispatch of judge() by rule kind and dtype, and the shipped tolerances.yaml."""
import re

import numpy as np
import pytest

from parity.tolerances import (INTEGER_RULE, Registry, ToleranceConfigError, load_registry,
                               parse_rule)


def registry(*entries):
    return Registry.from_entries(list(entries))


def test_first_matching_rule_wins():
    rules = registry(
        {"pattern": "decoder.*", "atol": 1.0, "rtol": 0.0, "reason": "broad"},
        {"pattern": "decoder.dec_bbox_head.*", "atol": 0.0, "rtol": 0.0, "reason": "narrow"},
        {"pattern": "*", "atol": 0.5, "rtol": 0.0, "reason": "default"})
    assert rules.lookup("decoder.dec_bbox_head.2").reason == "broad"
    assert rules.lookup("encoder.input_proj.0").reason == "default"


def test_patterns_are_case_sensitive_and_cross_dots():
    rules = registry({"pattern": "grad:*", "rel": 1e-3, "reason": "gradients"},
                     {"pattern": "*", "atol": 1.0, "reason": "default"})
    assert rules.lookup("grad:backbone.conv1.conv1_1.conv.weight").kind == "norm"
    assert rules.lookup("GRAD:backbone.w").kind == "float"


def test_no_match_raises_lookup_error():
    with pytest.raises(LookupError, match="loss:loss_vfl"):
        registry({"pattern": "grad:*", "rel": 1e-3, "reason": "r"}).lookup("loss:loss_vfl")


@pytest.mark.parametrize("entry, fragment", [
    ({"pattern": "a", "atol": 1.0}, "reason"),
    ({"pattern": "a", "atol": 1.0, "reason": "   "}, "reason"),
    ({"pattern": "a", "atol": 1.0, "rel": 1.0, "reason": "r"}, "exactly one"),
    ({"pattern": "a", "reason": "r"}, "exactly one"),
    ({"pattern": "a", "exact": False, "reason": "r"}, "only be true"),
    ({"pattern": "a", "atol": -1.0, "reason": "r"}, ">= 0"),
    ({"pattern": "a", "atol": "1e-5", "reason": "r"}, ">= 0"),
    ({"pattern": "a", "atol": 1.0, "reason": "r", "rtoll": 1.0}, "unknown key"),
    ({"atol": 1.0, "reason": "r"}, "pattern"),
])
def test_malformed_rules_are_rejected(entry, fragment):
    with pytest.raises(ToleranceConfigError, match=fragment):
        parse_rule(entry)


def test_missing_reason_rejected_when_loading_yaml(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("rules:\n  - pattern: '*'\n    atol: 1.0e-5\n    rtol: 1.0e-5\n")
    with pytest.raises(ToleranceConfigError, match="reason"):
        load_registry(str(path))


def test_yaml_without_rules_list_rejected(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("default: {atol: 1.0}\n")
    with pytest.raises(ToleranceConfigError, match="rules"):
        load_registry(str(path))


def test_missing_atol_or_rtol_defaults_to_zero():
    rule = parse_rule({"pattern": "a", "rtol": 0.5, "reason": "r"})
    assert (rule.atol, rule.rtol) == (0.0, 0.5)


def test_integer_tensors_are_judged_exactly_under_a_float_rule():
    rules = registry({"pattern": "*", "atol": 10.0, "rtol": 10.0, "reason": "loose"})
    result = rules.judge("probe:decoder.topk_ind", np.array([1, 2, 3]), np.array([1, 2, 4]))
    assert result.kind == "exact" and not result.passed
    assert result.rule == INTEGER_RULE.pattern and result.reason == INTEGER_RULE.reason
    bools = rules.judge("probe:decoder.valid_mask", np.array([True, False]), np.array([True, True]))
    assert bools.kind == "exact" and not bools.passed


def test_exact_rule_applies_to_floats_too():
    rules = registry({"pattern": "probe:decoder.anchors", "exact": True, "reason": "from shapes only"})
    result = rules.judge("probe:decoder.anchors", np.array([0.5, 1.0]), np.array([0.5, 1.0 + 2 ** -30]))
    assert result.kind == "exact" and not result.passed
    assert result.rule == "probe:decoder.anchors" and result.reason == "from shapes only"


def test_judge_dispatches_by_rule_kind():
    rules = registry({"pattern": "grad:*", "rel": 0.25, "reason": "norm-wise"},
                     {"pattern": "*", "atol": 0.25, "rtol": 0.0, "reason": "element-wise"})
    # ||ref|| = 4 and ||ref - test|| = 1: passes norm-wise at 0.25, but one element
    # differs by 1 > 0.25, so the element-wise rule would fail the same pair
    ref, test = np.array([0.0, 4.0]), np.array([0.0, 5.0])
    norm_result = rules.judge("grad:w", ref, test)
    float_result = rules.judge("w", ref, test)
    assert norm_result.kind == "norm" and norm_result.passed and norm_result.rule == "grad:*"
    assert float_result.kind == "float" and not float_result.passed and float_result.rule == "*"
    assert float_result.tolerance == {"atol": 0.25, "rtol": 0.0}


def test_shipped_yaml_loads_with_the_documented_default_last():
    for dtype in ("float32", "float64"):
        rules = load_registry(dtype=dtype)
        assert rules.rules[-1].pattern == "*"
        # every threshold carries a figure: a measurement or the target
        assert all(rule.kind == "exact" or re.search(r"\d", rule.reason) for rule in rules.rules), dtype


@pytest.mark.parametrize("dtype, name, kind", [
    ("float32", "grad:backbone.conv1.conv1_1.conv.weight", "floor"),
    ("float32", "probe:decoder.topk_ind", "exact"),
    ("float32", "probe:matcher.indices", "exact"),
    ("float32", "decoder.dec_bbox_head.2", "floor"),
    ("float32", "loss:loss_vfl", "floor"),
    ("float32", "step3:param:backbone.conv1.conv1_1.conv.weight", "floor"),
    ("float32", "step3:buffer:backbone.conv1.conv1_1.norm.running_mean", "floor"),
    ("float64", "grad:backbone.conv1.conv1_1.conv.weight", "float"),
    ("float64", "probe:decoder.topk_ind", "exact"),
    ("float64", "step3:exp_avg:backbone.conv1.conv1_1.conv.weight", "float"),
    ("float64", "decoder.dec_bbox_head.2", "float"),
])
def test_shipped_yaml_covers_every_name_family(dtype, name, kind):
    assert load_registry(dtype=dtype).lookup(name, with_floor=True).kind == kind


def test_rule_round_trips_through_to_dict():
    entry = {"pattern": "loss:*", "atol": 1e-5, "rtol": 1e-4, "reason": "r"}
    assert parse_rule(entry).to_dict() == entry
