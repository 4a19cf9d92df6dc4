"""Whole-model parity of r18vd on small inputs: eval forward and training forward
(losses and gradients), with realistic random weights, judged by the tolerance
registry with the reference's noise floor measured."""
import pytest

from parity.run import build_pair, compare, make_batch

CONFIG = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"


@pytest.fixture(scope="module")
def pair():
    return build_pair(CONFIG, weight_seed=0)


def failures(results):
    return [f"{r.name}: {r.note}" for r in results if not r.passed]


@pytest.mark.parity
@pytest.mark.parametrize("batch,size", [(1, 128), (2, 160)])
def test_eval_forward_matches(pair, batch, size):
    images, _ = make_batch(seed=size, batch=batch, size=size, num_classes=80)
    results, _, _ = compare(pair, "eval", images, measure_floor=True)
    assert len(results) > 400
    assert not failures(results), failures(results)[:10]


@pytest.mark.parity
@pytest.mark.parametrize("gt_counts", [[3, 5], [0, 2], [0, 0]], ids=["gt3-5", "gt0-2", "no-gt"])
def test_training_forward_losses_and_gradient_presence_match(pair, gt_counts):
    """Every activation, probe and loss term within tolerance, and every trainable
    parameter gets a gradient on both sides or on neither. Gradient values are judged
    in the report but not asserted here: in float32 a ReLU input or a sampling point
    within rounding of a kink can fall on the other side in one framework, which moves
    a whole-network gradient by up to ~1e-2 of its scale (README, "Known gaps");
    gradient values are asserted per block in test_twin_* and in float64."""
    images, targets = make_batch(seed=sum(gt_counts), batch=2, size=160, num_classes=80, gt_counts=gt_counts)
    results, _, _ = compare(pair, "train", images, targets, noise_seed=1, measure_floor=True)
    names = {r.name for r in results}
    assert "loss:total" in names and sum(n.startswith("grad:") for n in names) > 300
    not_gradients = [f for f in failures(results) if not f.startswith("grad:")]
    assert not not_gradients, not_gradients[:10]
    presence = [f for r, f in zip(results, [f"{r.name}: {r.note}" for r in results])
                if r.kind == "gradient-presence" and not r.passed]
    assert not presence, presence[:10]
