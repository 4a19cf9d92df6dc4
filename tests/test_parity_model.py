"""Whole-model parity of r18vd on fixed small inputs, both verdicts: float64 (logic)
and float32 (numerics, against the reference's capped per-block noise floor). Every
tensor is asserted, gradients included: a float32 tensor may only be "not judgeable"
when its float64 verdict on the same case passes. Each comparison writes its report
under reports/parity/<test id>__<dtype>/."""
import pytest

from parity.cases import Case, run_case

CONFIG = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
TARGETS = {"gt3-5": [{"labels": [0, 17, 79], "boxes": [[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.4, 0.5], [0.5, 0.5, 1.0, 1.0]]},
                     {"labels": [5, 5, 60, 2, 41], "boxes": [[0.1, 0.1, 0.2, 0.2]] * 2 + [[0.8, 0.5, 0.4, 0.9],
                                                          [0.5, 0.05, 0.3, 0.1], [0.5, 0.5, 0.01, 0.01]]}],
           "no-gt": [{"labels": [], "boxes": []}, {"labels": [], "boxes": []}]}
CASES = {
    "eval-128x160": dict(mode="eval", height=128, width=160),
    "train-160x128-gt3-5": dict(mode="train", height=160, width=128, targets=TARGETS["gt3-5"]),
    "train-128x128-no-gt": dict(mode="train", height=128, width=128, targets=TARGETS["no-gt"]),
}


def verdicts(case_args, parity_report):
    """Run the case in float64 then float32; returns {dtype: results}."""
    out = {}
    for dtype in ("float64", "float32"):
        case = Case(CONFIG, dtype=dtype, batch=2, seed=3, force_matcher=case_args["mode"] == "train", **case_args)
        out[dtype], _ = run_case(case)
        parity_report(out[dtype], case)
    return out


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(CASES))
def test_both_verdicts_pass(name, parity_report):
    results = verdicts(CASES[name], parity_report)
    for dtype, judged in results.items():
        failed = [f"{r.name}: {r.note}" for r in judged if r.verdict == "fail"]
        assert not failed, (dtype, failed[:10])
    assert all(r.verdict == "pass" for r in results["float64"]), "float64 judges every tensor"
    unjudged = {r.name for r in results["float32"] if r.verdict == "not judgeable"}
    print(f"{name}: {len(results['float32'])} tensors, {len(unjudged)} not judgeable in float32")
    if CASES[name]["mode"] == "eval":
        assert not unjudged, sorted(unjudged)[:10]  # the eval forward is never chaotic
    presence = [r.name for r in results["float32"] if r.kind == "gradient-presence" and not r.passed]
    assert not presence, presence[:10]
