"""Twin parity of RTDETRPostProcessor: labels, boxes and scores equal to the
reference's for distinct scores (focal and softmax forms, very negative logits
included), the same selection up to exact ties when scores tie, the deploy tuple
and the COCO remap."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from rtdetr_common import probes
from rtdetr_jittor._env import jt
from rtdetr_jittor.rtdetr.rtdetr_postprocessor import RTDETRPostProcessor as JPost
from reference_pytorch.rtdetr.rtdetr_postprocessor import RTDETRPostProcessor as RPost

pytestmark = pytest.mark.parity


def run_both(logits, boxes, sizes, **kw):
    rt = RPost(**kw)(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)), torch.tensor(sizes))
    rj = JPost(**kw)(dict(pred_logits=jt.array(logits), pred_boxes=jt.array(boxes)), jt.array(sizes))
    return rt, rj


def assert_same(rt, rj):
    assert len(rt) == len(rj)
    for t, j in zip(rt, rj):
        assert j["labels"].dtype == jt.int64
        np.testing.assert_array_equal(j["labels"].numpy(), t["labels"].numpy())
        # sigmoid/softmax in float32: measured 2.5e-7 relative over 200 cases (a few ulp)
        np.testing.assert_allclose(j["scores"].numpy(), t["scores"].numpy(), rtol=1e-6, atol=1e-30)
        # the same float32 operations on pixel coordinates: measured max difference 0
        np.testing.assert_allclose(j["boxes"].numpy(), t["boxes"].numpy(), rtol=1e-6, atol=1e-4)


@st.composite
def distinct_problems(draw, very_negative=False):
    bs = draw(st.integers(1, 3))
    q = draw(st.integers(1, 12))
    c = draw(st.integers(1, 8))
    k = draw(st.integers(1, q * c))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    lo, hi = (-60, -31) if very_negative else (-8, 8)
    logits = np.stack([rng.permutation(np.linspace(lo, hi, q * c)) for _ in range(bs)]).reshape(bs, q, c)
    boxes = rng.uniform(0, 1, (bs, q, 4))
    sizes = rng.integers(1, 2000, (bs, 2))
    return logits.astype(np.float32), boxes.astype(np.float32), sizes, k


@given(distinct_problems())
def test_focal_form_matches(problem):
    logits, boxes, sizes, k = problem
    assert_same(*run_both(logits, boxes, sizes, num_classes=logits.shape[-1], use_focal_loss=True, num_top_queries=k))


@given(distinct_problems(very_negative=True))
def test_focal_form_matches_for_very_negative_logits(problem):
    # Jittor's own sigmoid clamps at -30 and would tie all of these; compat.sigmoid does not
    logits, boxes, sizes, k = problem
    assert_same(*run_both(logits, boxes, sizes, num_classes=logits.shape[-1], use_focal_loss=True, num_top_queries=k))


@given(st.integers(2, 3), st.integers(1, 12), st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_softmax_form_matches(bs, q, c, seed, data):
    # the official softmax runs over the batch (implicit dim 0): with one image every score
    # is 1.0, an exact tie everywhere, so two or more images, with continuous logits
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, q + 1))
    logits = rng.normal(0, 3, (bs, q, c + 1)).astype(np.float32)
    boxes = rng.uniform(0, 1, (bs, q, 4)).astype(np.float32)
    sizes = rng.integers(1, 2000, (bs, 2))
    assert_same(*run_both(logits, boxes, sizes, num_classes=c, use_focal_loss=False, num_top_queries=k))


@given(st.integers(1, 3), st.integers(2, 10), st.integers(1, 5), st.integers(0, 2**31 - 1), st.data())
def test_tied_scores_select_the_same_set(bs, q, c, seed, data):
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, q * c))
    logits = rng.choice([-2.0, 0.0, 0.0, 1.5], (bs, q, c)).astype(np.float32)  # many exact ties
    boxes = rng.uniform(0, 1, (bs, q, 4)).astype(np.float32)  # distinct per query: a box names its query
    sizes = rng.integers(1, 1000, (bs, 2))
    rt, rj = run_both(logits, boxes, sizes, num_classes=c, use_focal_loss=True, num_top_queries=k)
    for b, (t, j) in enumerate(zip(rt, rj)):
        # the selected scores agree as a sorted list (ties make only the order/choice among equals free)
        np.testing.assert_allclose(np.sort(j["scores"].numpy()), np.sort(t["scores"].numpy()), rtol=1e-6)
        kth = np.sort(logits[b].reshape(-1))[::-1][k - 1]

        def strict(res):
            keep = res["scores"].numpy() > 1 / (1 + np.exp(-kth)) * (1 + 1e-6)
            return sorted(zip(res["labels"].numpy()[keep].tolist(), map(tuple, np.round(res["boxes"].numpy()[keep], 3))))
        assert strict(j) == strict(t)  # every pair scoring above the k-th value is selected by both


def test_deploy_tuple_and_remap_match():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (2, 10, 80)).astype(np.float32)
    boxes = rng.uniform(0, 1, (2, 10, 4)).astype(np.float32)
    sizes = np.array([[640, 480], [1333, 800]])
    rt, rj = run_both(logits, boxes, sizes, num_classes=80, num_top_queries=20, remap_mscoco_category=True)
    assert_same(rt, rj)
    assert max(int(r["labels"].max()) for r in rt) > 79  # category ids (1..90), not labels
    pt, pj = RPost(num_classes=80, num_top_queries=20).deploy(), JPost(num_classes=80, num_top_queries=20).deploy()
    assert pj.deploy_mode and not pj.is_training()
    out_t = pt(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)), torch.tensor(sizes))
    out_j = pj(dict(pred_logits=jt.array(logits), pred_boxes=jt.array(boxes)), sizes)
    assert isinstance(out_j, tuple) and len(out_j) == 3
    assert_same([dict(labels=out_t[0], boxes=out_t[1], scores=out_t[2])],
                [dict(labels=out_j[0], boxes=out_j[1], scores=out_j[2])])


def test_probes_match():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (1, 6, 5)).astype(np.float32)
    boxes = rng.uniform(0, 1, (1, 6, 4)).astype(np.float32)
    with probes.recording() as rec_t:
        RPost(num_classes=5, num_top_queries=4)(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)),
                                                torch.tensor([[10, 20]]))
    with probes.recording() as rec_j:
        JPost(num_classes=5, num_top_queries=4)(dict(pred_logits=jt.array(logits), pred_boxes=jt.array(boxes)),
                                                jt.array(np.array([[10, 20]])))
    assert [n for n, _ in rec_j] == [n for n, _ in rec_t] == [
        "postprocessor.flat_scores", "postprocessor.topk_index",
        "postprocessor.labels", "postprocessor.boxes", "postprocessor.scores"]
    np.testing.assert_array_equal(dict(rec_j)["postprocessor.labels"].numpy(), dict(rec_t)["postprocessor.labels"].numpy())
