"""The harness refuses what no comparison can judge, with the project's own errors:
non-finite images or weights, and targets the model cannot take (the same
``validate_targets`` both twins' engines call)."""
import numpy as np
import pytest

from parity.run import build_pair, check_inputs, make_batch
from rtdetr_common.errors import InputError, TargetError

CONFIG = "configs/synthetic/rtdetr_r18vd_small_synthetic.yml"


@pytest.fixture(scope="module")
def pair():
    return build_pair(CONFIG)


@pytest.fixture
def batch():
    return make_batch(0, 2, (64, 96), 4, [2, 0])


def test_clean_inputs_pass(pair, batch):
    check_inputs(pair, *batch)


def test_non_finite_image_is_refused(pair, batch):
    images, targets = batch
    images[1, 0, 3, 5] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        check_inputs(pair, images, targets)


def test_non_finite_weight_is_refused_and_named(pair, batch):
    key = "decoder.enc_output.0.weight"
    pair.jittor_weight_edits[key] = np.where(np.eye(*pair.weights[key].shape, dtype=bool), np.inf,
                                             pair.weights[key])
    try:
        with pytest.raises(InputError, match=key):
            check_inputs(pair, *batch)
    finally:
        del pair.jittor_weight_edits[key]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(labels=np.array([0, 4])), r"outside \[0, num_classes=4\)"),
    (lambda t: t.update(boxes=np.array([[0.5, 0.5, 0.2, np.nan], [0.5, 0.5, 0.1, 0.1]], np.float32)), "finite"),
])
def test_targets_the_model_cannot_take_are_refused(pair, batch, edit, message):
    images, targets = batch
    edit(targets[0])
    with pytest.raises(TargetError, match=message):
        check_inputs(pair, images, targets)


@pytest.mark.parametrize("size, expected", [(640, (640, 640)), ("640", (640, 640)), ("480,640", (480, 640)),
                                            ((96, 64), (96, 64))])
def test_image_size_reads_square_and_non_square_sizes(size, expected):
    from parity.run import image_size
    assert image_size(size) == expected
