"""Planted bugs: each deliberate bug in the Jittor twin must make the harness fail and
be located at the right module. A harness that passes a planted bug is broken."""
import pytest

from parity.planted_bugs import BUGS
from parity.run import build_pair, compare, make_batch

CONFIG = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"


@pytest.fixture(scope="module")
def pair():
    return build_pair(CONFIG, weight_seed=0)


def run(pair, mode):
    images, targets = make_batch(seed=7, batch=2, size=128, num_classes=80, gt_counts=[2, 3])
    results, _, _ = compare(pair, mode, images, targets, noise_seed=3, measure_floor=True)
    return results


@pytest.mark.parity
@pytest.mark.parametrize("bug_name", sorted(BUGS))
def test_planted_bug_is_caught_at_its_module(pair, bug_name):
    bug, plant = BUGS[bug_name]
    with plant(pair):
        results = run(pair, bug.mode)
    failed = [r for r in results if not r.passed]
    assert failed, f"{bug.description}: the harness passed a planted bug"
    if bug.expected.startswith("grad:"):
        flagged = [r.name for r in failed if r.name.startswith(bug.expected)]
        assert flagged, f"{bug.description}: no failure under {bug.expected}; failures: {[r.name for r in failed][:5]}"
    else:
        assert failed[0].name.startswith(bug.expected), (
            f"{bug.description}: first divergence {failed[0].name}, expected {bug.expected}")


@pytest.mark.parity
def test_eval_without_planted_bug_passes(pair):
    failed = [r.name for r in run(pair, "eval") if not r.passed]
    assert not failed, failed[:10]
