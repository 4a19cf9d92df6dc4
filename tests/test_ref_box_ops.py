"""Reference box ops (``reference_pytorch/rtdetr/box_ops.py``): conversions, pairwise
IoU and GIoU against hand-worked values, an independent float64 implementation and
the GIoU properties (range, identity, symmetry, GIoU <= IoU, containment)."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from reference_pytorch.rtdetr import box_ops


def _boxes_xyxy(draw_list):
    """(N, 4) xyxy float32 boxes from (x0, y0, w, h) tuples."""
    a = np.asarray(draw_list, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], axis=1).astype(np.float32)


_coord = st.floats(0.0, 1.0, width=32, allow_subnormal=False)
_TINY = float(np.float32(1e-4))
_size = st.one_of(st.floats(_TINY, 1.0, width=32), st.sampled_from([_TINY, 0.5, 1.0]))
_box = st.tuples(_coord, _coord, _size, _size)
_box_lists = st.lists(_box, min_size=1, max_size=6)


def _iou_giou_float64(b1, b2):
    """Plain float64 pairwise IoU / GIoU, written out per pair (independent of the code)."""
    n, m = len(b1), len(b2)
    iou = np.zeros((n, m))
    giou = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            ax0, ay0, ax1, ay1 = map(float, b1[i])
            bx0, by0, bx1, by1 = map(float, b2[j])
            iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
            ih = max(0.0, min(ay1, by1) - max(ay0, by0))
            inter = iw * ih
            union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
            hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
            iou[i, j] = inter / union
            giou[i, j] = inter / union - (hull - union) / hull
    return iou, giou


def test_conversions_hand_values():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.0, 1.0, 2.0, 0.0]])
    xyxy = box_ops.box_cxcywh_to_xyxy(cxcywh)
    np.testing.assert_allclose(xyxy.numpy(), [[0.4, 0.3, 0.6, 0.7], [-1.0, 1.0, 1.0, 1.0]], rtol=0, atol=1e-7)
    back = box_ops.box_xyxy_to_cxcywh(xyxy)
    np.testing.assert_allclose(back.numpy(), cxcywh.numpy(), rtol=0, atol=1e-7)


def test_box_area_hand_values():
    area = box_ops.box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]]))
    assert area.tolist() == [6.0, 0.0]


def test_iou_giou_hand_example():
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 7, hull 9 -> IoU 1/7, GIoU 1/7 - 2/9 = -5/63
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b2 = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    iou, union = box_ops.box_iou(b1, b2)
    assert union.item() == pytest.approx(7.0, abs=1e-6)
    assert iou.item() == pytest.approx(1 / 7, abs=1e-7)
    assert box_ops.generalized_box_iou(b1, b2).item() == pytest.approx(-5 / 63, abs=1e-7)


def test_giou_tends_to_minus_one_for_far_apart_boxes():
    b1 = torch.tensor([[0.0, 0.0, 1e-3, 1e-3]])
    b2 = torch.tensor([[0.999, 0.999, 1.0, 1.0]])
    g = box_ops.generalized_box_iou(b1, b2).item()
    assert -1.0 <= g < -0.99


@given(_box_lists, _box_lists)
def test_iou_giou_match_float64_formula(l1, l2):
    b1, b2 = _boxes_xyxy(l1), _boxes_xyxy(l2)
    iou, _ = box_ops.box_iou(torch.tensor(b1), torch.tensor(b2))
    giou = box_ops.generalized_box_iou(torch.tensor(b1), torch.tensor(b2))
    want_iou, want_giou = _iou_giou_float64(b1, b2)
    # float32 vs float64: measured max abs error 1.7e-7 (300 random batches); IoU/GIoU are O(1)
    np.testing.assert_allclose(iou.numpy(), want_iou, rtol=0, atol=2e-6)
    np.testing.assert_allclose(giou.numpy(), want_giou, rtol=0, atol=2e-6)


@given(_box_lists, _box_lists)
def test_giou_properties(l1, l2):
    b1, b2 = torch.tensor(_boxes_xyxy(l1)), torch.tensor(_boxes_xyxy(l2))
    iou, _ = box_ops.box_iou(b1, b2)
    giou = box_ops.generalized_box_iou(b1, b2)
    eps = 1e-6  # float32 rounding of O(1) quantities
    assert bool(((giou >= -1 - eps) & (giou <= 1 + eps)).all())
    assert bool(((iou >= -eps) & (iou <= 1 + eps)).all())
    assert bool((giou <= iou + eps).all())
    # symmetry
    np.testing.assert_allclose(box_ops.generalized_box_iou(b2, b1).numpy(), giou.numpy().T, rtol=0, atol=eps)
    # identity: GIoU(a, a) = 1
    np.testing.assert_allclose(torch.diag(box_ops.generalized_box_iou(b1, b1)).numpy(), 1.0, rtol=0, atol=eps)


@given(_box_lists)
def test_giou_equals_iou_under_containment(l1):
    b1 = torch.tensor(_boxes_xyxy(l1))
    outer = torch.tensor([[-1.0, -1.0, 3.0, 3.0]])  # contains every generated box
    iou, _ = box_ops.box_iou(b1, outer)
    np.testing.assert_allclose(box_ops.generalized_box_iou(b1, outer).numpy(), iou.numpy(), rtol=0, atol=1e-6)


@given(st.lists(st.tuples(_coord, _coord, _size, _size), min_size=1, max_size=6))
def test_conversion_round_trip(l1):
    cxcywh = torch.tensor(np.asarray(l1, dtype=np.float32))
    back = box_ops.box_xyxy_to_cxcywh(box_ops.box_cxcywh_to_xyxy(cxcywh))
    np.testing.assert_allclose(back.numpy(), cxcywh.numpy(), rtol=0, atol=2e-7)  # two float32 roundings of O(1)


def test_giou_rejects_invalid_and_nan_boxes():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(AssertionError):
        box_ops.generalized_box_iou(torch.tensor([[0.5, 0.0, 0.4, 1.0]]), good)
    with pytest.raises(AssertionError):
        box_ops.generalized_box_iou(good, torch.tensor([[0.0, float("nan"), 1.0, 1.0]]))


def test_empty_inputs_give_empty_matrices():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert box_ops.generalized_box_iou(torch.zeros(0, 4), good).shape == (0, 3)
    assert box_ops.box_iou(good, torch.zeros(0, 4))[0].shape == (3, 0)


def test_gradients_split_at_ties_and_pass_at_clamp_bound():
    # identical boxes: torch.max/min split the gradient between the tied arguments, so
    # d GIoU / d box1 + d GIoU / d box2 is the gradient with respect to a shared box (0 at the optimum).
    b = torch.tensor([[0.2, 0.2, 0.6, 0.7]], requires_grad=True)
    c = torch.tensor([[0.2, 0.2, 0.6, 0.7]], requires_grad=True)
    g1, g2 = torch.autograd.grad(box_ops.generalized_box_iou(b, c).sum(), [b, c])
    np.testing.assert_allclose((g1 + g2).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), atol=1e-6)
