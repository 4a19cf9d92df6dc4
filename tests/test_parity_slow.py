"""Real-size parity (minutes each; `pytest -m slow`): r18vd at 640 eval, training
forward with denoising and backward, 10 optimizer steps; r50vd at 640 eval."""
import pytest

from parity.run import build_pair, compare, make_batch
from parity.steps import run_steps

R18 = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
R50 = "configs/rtdetr/rtdetr_r50vd_6x_coco.yml"


def failures(results, skip_prefix=None):
    return [f"{r.name}: {r.note}" for r in results
            if not r.passed and not (skip_prefix and r.name.startswith(skip_prefix))]


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("config", [R18, R50], ids=["r18vd", "r50vd"])
def test_eval_640(config):
    pair = build_pair(config)
    images, _ = make_batch(seed=0, batch=1, size=640, num_classes=80)
    results, _, _ = compare(pair, "eval", images, measure_floor=True)
    assert not failures(results), failures(results)[:10]


@pytest.mark.slow
@pytest.mark.parity
def test_r18vd_training_forward_and_backward_640():
    pair = build_pair(R18)
    images, targets = make_batch(seed=0, batch=2, size=640, num_classes=80, gt_counts=[3, 5])
    results, _, _ = compare(pair, "train", images, targets, measure_floor=True, force_matcher=True)
    assert not failures(results, skip_prefix="grad:"), failures(results, "grad:")[:10]
    presence = [r.name for r in results if r.kind == "gradient-presence" and not r.passed]
    assert not presence, presence[:10]


@pytest.mark.slow
@pytest.mark.parity
def test_r18vd_ten_optimizer_steps_640():
    pair = build_pair(R18)
    batches = [make_batch(seed=i, batch=2, size=640, num_classes=80) for i in range(10)]
    results, drift = run_steps(pair, batches, 10)
    assert len(drift) == 10
    # Parameters, EMA weights and losses at every step: the targets. Adam's
    # moments are gradients, judged in the report; in float32 a kink flip moves them
    # (measured: dec_bbox_head.0.layers.1 at step 1), as for gradients (README, known gaps).
    not_moments = [f for f in failures(results) if ":exp_avg" not in f]
    assert not not_moments, not_moments[:10]
    assert max(row["max_param_rel_diff"] for row in drift) <= 1e-5
