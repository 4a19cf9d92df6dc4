"""Planted bugs: each deliberate porting mistake in the Jittor twin must make the logic
verdict (float64) fail at the tensor where the bug lives, while the same case without
the bug passes. A harness that passes a planted bug is broken.

Every run forces the reference's top-k and matcher decisions on the twin, the
strongest setting: a wrong *own* decision must still fail (``topk_smallest``,
``matcher_maximises``). Bugs only a non-square input can show pass on a square one.
"""
import re

import pytest

from parity.cases import Case, run_case
from parity.planted_bugs import BUGS

CONFIG = "configs/synthetic/rtdetr_r18vd_small_synthetic.yml"
NON_SQUARE, SQUARE = (64, 96), (96, 96)
TARGETS = [{"labels": [0, 3], "boxes": [[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.4, 0.5]]},
           {"labels": [1, 2, 2], "boxes": [[0.5, 0.5, 0.9, 0.95], [0.1, 0.2, 0.2, 0.1], [0.1, 0.2, 0.2, 0.1]]}]


def case_for(mode, needs="", size=NON_SQUARE):
    return Case(CONFIG, mode=mode, dtype="float64", height=size[0], width=size[1], batch=2, seed=7,
                targets=None if mode == "eval" else TARGETS,
                multi_scale=[96] if needs == "multi-scale" else None, steps=2,
                force_topk=True, force_matcher=mode == "train")


def first_failure(results):
    return next((r for r in results if r.verdict == "fail"), None)


@pytest.mark.parity
@pytest.mark.parametrize("bug_name", sorted(BUGS))
def test_planted_bug_is_caught_where_it_lives(bug_name, parity_report):
    bug, plant = BUGS[bug_name]
    case = case_for(bug.mode, bug.needs)
    from parity.cases import pair_for
    pair = pair_for(case)
    with plant(pair):
        results, _ = run_case(case, pair)
    parity_report(results, case, expected="FAIL", bug=bug.description)
    first = first_failure(results)
    assert first is not None, f"{bug.description}: the harness passed a planted bug ({case.command()})"
    if bug.gradient_only:
        forward = [r.name for r in results if r.verdict == "fail" and not r.name.startswith("grad:")]
        assert not forward, f"a gradient-only bug changed forward values: {forward[:5]}"
        flagged = [r.name for r in results if r.verdict == "fail" and re.match(bug.expected, r.name)]
        assert flagged, f"{bug.description}: no failure matches {bug.expected}"
    else:
        assert re.match(bug.expected, first.name), (
            f"{bug.description}: first failure {first.name} ({first.note}), expected {bug.expected}")


@pytest.mark.parity
@pytest.mark.parametrize("mode,needs", [("eval", ""), ("train", ""), ("train", "multi-scale"), ("steps", "")])
def test_clean_control_passes(mode, needs, parity_report):
    case = case_for(mode, needs)
    results, _ = run_case(case)
    parity_report(results, case)
    failed = [f"{r.name}: {r.note}" for r in results if r.verdict != "pass"]
    assert not failed, failed[:10]


@pytest.mark.parity
@pytest.mark.parametrize("bug_name", sorted(name for name, (bug, _) in BUGS.items() if bug.needs == "non-square"))
def test_non_square_bug_is_invisible_on_a_square_input(bug_name):
    """Why hypothesis draws height and width independently: these bugs pass every square test."""
    bug, plant = BUGS[bug_name]
    case = case_for(bug.mode, size=SQUARE)
    from parity.cases import pair_for
    pair = pair_for(case)
    with plant(pair):
        results, _ = run_case(case, pair)
    assert first_failure(results) is None
