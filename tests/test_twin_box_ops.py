"""Twin parity of box ops: ``rtdetr_jittor/rtdetr/box_ops.py`` against the reference,
values and gradients, with tied coordinates, duplicate, touching, tiny and large
boxes (where Jittor's native max/min/clamp/abs gradients differ from torch's), and
the compat shims that fix those ties."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from rtdetr_jittor._env import jt
from rtdetr_jittor import compat
from rtdetr_jittor.rtdetr import box_ops as J
from reference_pytorch.rtdetr import box_ops as R

pytestmark = pytest.mark.parity

_GRID = [0.0, 0.25, 0.5, 0.75, 1.0]
_TINY = float(np.float32(1e-4))
_centre = st.one_of(st.sampled_from(_GRID), st.floats(0.0, 1.0, width=32, allow_subnormal=False))
_size = st.one_of(st.sampled_from([_TINY, 0.25, 0.5, 1.0, 2.0]), st.floats(_TINY, 2.0, width=32))
_box = st.tuples(_centre, _centre, _size, _size)


@st.composite
def box_pairs(draw):
    """Two cxcywh box sets; the second reuses boxes of the first (duplicates) at will."""
    b1 = draw(st.lists(_box, min_size=1, max_size=5))
    b2 = draw(st.lists(st.one_of(_box, st.sampled_from(b1)), min_size=1, max_size=5))
    return np.asarray(b1, np.float32), np.asarray(b2, np.float32)


def _torch_giou_and_grads(b1, b2, w):
    t1 = torch.tensor(b1, requires_grad=True)
    t2 = torch.tensor(b2, requires_grad=True)
    x1, x2 = R.box_cxcywh_to_xyxy(t1), R.box_cxcywh_to_xyxy(t2)
    iou, union = R.box_iou(x1, x2)
    giou = R.generalized_box_iou(x1, x2)
    g1, g2 = torch.autograd.grad((giou * torch.tensor(w)).sum() + (iou * torch.tensor(w)).sum(), [t1, t2])
    return iou.detach().numpy(), union.detach().numpy(), giou.detach().numpy(), g1.numpy(), g2.numpy()


def _jittor_giou_and_grads(b1, b2, w):
    j1, j2 = jt.array(b1), jt.array(b2)
    x1, x2 = J.box_cxcywh_to_xyxy(j1), J.box_cxcywh_to_xyxy(j2)
    iou, union = J.box_iou(x1, x2)
    giou = J.generalized_box_iou(x1, x2)
    g1, g2 = jt.grad((giou * jt.array(w)).sum() + (iou * jt.array(w)).sum(), [j1, j2])
    return iou.numpy(), union.numpy(), giou.numpy(), g1.numpy(), g2.numpy()


@given(box_pairs(), st.integers(0, 2**31 - 1))
def test_iou_giou_values_and_gradients(pair, seed):
    b1, b2 = pair
    w = np.random.default_rng(seed).uniform(-1, 1, (len(b1), len(b2))).astype(np.float32)
    ref = _torch_giou_and_grads(b1, b2, w)
    got = _jittor_giou_and_grads(b1, b2, w)
    for name, r, g in zip(["iou", "union", "giou"], ref[:3], got[:3]):
        # same float32 formula; Jittor's fused kernels round differently (a few ulp):
        # measured max difference 1.04e-7 (abs on O(1) values; relative for union) over 600 cases
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=5e-7, err_msg=name)
    # gradient scale: IoU/GIoU move by O(1) when a side moves by its own length, so
    # d/dcoord ~ 1/side; cancellation noise (e.g. identical boxes, where the exact
    # gradient is 0) is float32 eps times that scale on either side
    scale = max(1.0 / float(min(b1[:, 2:].min(), b2[:, 2:].min())), float(np.abs(ref[3]).max()), float(np.abs(ref[4]).max()))
    for name, r, g in zip(["d/dboxes1", "d/dboxes2"], ref[3:], got[3:]):
        # measured max |diff| / scale: 2.1e-7 over 400 random cases (identical 1e-4 boxes: 2.4e-8)
        assert float(np.abs(g - r).max()) / scale < 1e-5, (name, g, r)


@given(st.lists(_box, min_size=1, max_size=6))
def test_conversions_identical(boxes):
    b = np.asarray(boxes, np.float32)
    xyxy_t = R.box_cxcywh_to_xyxy(torch.tensor(b)).numpy()
    xyxy_j = J.box_cxcywh_to_xyxy(jt.array(b)).numpy()
    np.testing.assert_array_equal(xyxy_j, xyxy_t)  # the same two float32 operations per coordinate
    np.testing.assert_array_equal(J.box_xyxy_to_cxcywh(jt.array(xyxy_t)).numpy(),
                                  R.box_xyxy_to_cxcywh(torch.tensor(xyxy_t)).numpy())
    np.testing.assert_array_equal(J.box_area(jt.array(xyxy_t)).numpy(), R.box_area(torch.tensor(xyxy_t)).numpy())


@pytest.mark.parametrize("b1,b2", [
    ([[0.5, 0.5, 0.4, 0.4]], [[0.5, 0.5, 0.4, 0.4]]),                          # identical boxes
    ([[0.3, 0.5, 0.2, 0.2]], [[0.5, 0.5, 0.2, 0.2]]),                          # touching edges: clamp at 0
    ([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.2, 0.6]], [[0.5, 0.5, 0.4, 0.2]]),    # shared centres, tied sides
    ([[0.25, 0.25, 0.5, 0.5]], [[0.5, 0.5, 1.0, 1.0]]),                        # shared corner, containment
])
def test_gradients_at_ties_match_torch(b1, b2):
    b1, b2 = np.asarray(b1, np.float32), np.asarray(b2, np.float32)
    w = np.ones((len(b1), len(b2)), np.float32)
    ref = _torch_giou_and_grads(b1, b2, w)
    got = _jittor_giou_and_grads(b1, b2, w)
    for r, g in zip(ref, got):
        # ulp-level rounding only (gradients here are O(1)): measured max abs difference 4.8e-7
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


def test_degenerate_boxes_give_the_same_nans():
    b = np.asarray([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32)
    t = R.generalized_box_iou(R.box_cxcywh_to_xyxy(torch.tensor(b)), R.box_cxcywh_to_xyxy(torch.tensor(b))).numpy()
    j = J.generalized_box_iou(J.box_cxcywh_to_xyxy(jt.array(b)), J.box_cxcywh_to_xyxy(jt.array(b))).numpy()
    assert np.isnan(t).any()
    np.testing.assert_array_equal(np.isnan(j), np.isnan(t))
    np.testing.assert_allclose(j, t, rtol=0, atol=1e-7, equal_nan=True)


def test_invalid_boxes_fail_on_both_sides():
    bad = np.asarray([[0.6, 0.0, 0.4, 1.0]], np.float32)
    good = np.asarray([[0.0, 0.0, 1.0, 1.0]], np.float32)
    with pytest.raises(AssertionError):
        R.generalized_box_iou(torch.tensor(bad), torch.tensor(good))
    with pytest.raises(AssertionError):
        J.generalized_box_iou(jt.array(bad), jt.array(good))


def test_empty_inputs():
    good = np.asarray([[0.0, 0.0, 1.0, 1.0]] * 2, np.float32)
    assert tuple(J.generalized_box_iou(jt.zeros((0, 4)), jt.array(good)).shape) == (0, 2)
    assert tuple(J.box_iou(jt.array(good), jt.zeros((0, 4)))[0].shape) == (2, 0)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_compat_max_min_split_ties_like_torch(op):
    a = np.asarray([1.0, 2.0, 3.0, 2.0, -0.0], np.float32)
    b = np.asarray([1.0, 1.0, 4.0, 2.0, 0.0], np.float32)
    w = np.asarray([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out_t = getattr(torch, op)(ta, tb)
    ga_t, gb_t = torch.autograd.grad((out_t * torch.tensor(w)).sum(), [ta, tb])
    ja, jb = jt.array(a), jt.array(b)
    out_j = getattr(compat, op)(ja, jb)
    ga_j, gb_j = jt.grad((out_j * jt.array(w)).sum(), [ja, jb])
    np.testing.assert_array_equal(out_j.numpy(), out_t.detach().numpy())
    np.testing.assert_array_equal(ga_j.numpy(), ga_t.numpy())
    np.testing.assert_array_equal(gb_j.numpy(), gb_t.numpy())


def test_compat_absolute_zero_gradient_at_zero():
    x = np.asarray([-2.0, 0.0, 3.0], np.float32)
    tx = torch.tensor(x, requires_grad=True)
    (g_t,) = torch.autograd.grad(tx.abs().sum(), [tx])
    jx = jt.array(x)
    g_j = jt.grad(compat.absolute(jx).sum(), jx)
    np.testing.assert_array_equal(compat.absolute(jx).numpy(), np.abs(x))
    np.testing.assert_array_equal(g_j.numpy(), g_t.numpy())


def test_compat_cdist_l1_matches_torch():
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 4)).astype(np.float32), rng.random((5, 4)).astype(np.float32)
    want = torch.cdist(torch.tensor(a), torch.tensor(b), p=1).numpy()
    # four float32 terms summed in a possibly different order: measured max abs difference 0 (50 cases)
    np.testing.assert_allclose(compat.cdist_l1(jt.array(a), jt.array(b)).numpy(), want, rtol=0, atol=1e-6)
