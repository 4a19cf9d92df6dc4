"""The index of a test session's reports: its verdict column says what the test expected,
and its worst ratio ignores tensors that were not judged."""
from parity.index import verdict_text, worst_judged_ratio


def _tensor(verdict, ratio):
    return {"verdict": verdict, "metrics": {"tol_ratio": ratio}}


def test_worst_ratio_is_over_judged_tensors_only():
    tensors = [_tensor("pass", 0.3), _tensor("not judgeable", 40.0), _tensor("fail", 2.5)]
    assert worst_judged_ratio(tensors) == 2.5
    assert worst_judged_ratio([_tensor("not judgeable", 9.0)]) is None


def test_verdict_text_flags_what_the_test_did_not_expect():
    assert verdict_text({"verdict": "PASS", "expected": "PASS"}) == "PASS"
    assert verdict_text({"verdict": "FAIL", "expected": "FAIL"}) == "FAIL (expected FAIL)"
    assert "unexpected" in verdict_text({"verdict": "PASS", "expected": "FAIL"})
    assert "unexpected" in verdict_text({"verdict": "FAIL", "expected": "PASS"})
