"""Reference RTDETRPostProcessor: focal top-k against an independent NumPy
implementation, [w, h] scaling, the official softmax form (implicit softmax dim 0),
deploy tuple, COCO category remap, the COCO tables, and probes."""
import numpy as np
import torch
from hypothesis import given, strategies as st

from rtdetr_common import probes
from rtdetr_common.data import coco_categories
from reference_pytorch.rtdetr.rtdetr_postprocessor import RTDETRPostProcessor


def independent_focal(logits, boxes, sizes, k):
    """Top-k of sigmoid scores over all (query, class) pairs, in float64 NumPy."""
    bs, q, c = logits.shape
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    res = []
    for b in range(bs):
        flat = scores[b].reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        cx, cy, w, h = boxes[b].astype(np.float64).T
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * np.tile(sizes[b], 2)
        res.append(dict(labels=order % c, boxes=xyxy[order // c], scores=flat[order]))
    return res


@st.composite
def distinct_problems(draw):
    bs = draw(st.integers(1, 3))
    q = draw(st.integers(1, 12))
    c = draw(st.integers(1, 8))
    k = draw(st.integers(1, q * c))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # distinct logits 0.01 apart: sigmoid keeps them apart in float32
    logits = np.stack([rng.permutation(np.linspace(-8, 8, q * c)) + rng.uniform(-0.004, 0.004) for _ in range(bs)])
    boxes = np.concatenate([rng.uniform(0, 1, (bs, q, 2)), rng.uniform(0, 1, (bs, q, 2))], -1)
    sizes = rng.integers(1, 2000, (bs, 2))
    return logits.reshape(bs, q, c).astype(np.float32), boxes.astype(np.float32), sizes, k


@given(distinct_problems())
def test_focal_topk_matches_independent_implementation(problem):
    logits, boxes, sizes, k = problem
    pp = RTDETRPostProcessor(num_classes=logits.shape[-1], use_focal_loss=True, num_top_queries=k)
    got = pp(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)), torch.tensor(sizes))
    want = independent_focal(logits, boxes, sizes, k)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["labels"].dtype == torch.int64
        np.testing.assert_array_equal(g["labels"].numpy(), w["labels"])
        np.testing.assert_allclose(g["scores"].numpy(), w["scores"], rtol=1e-6, atol=0)  # float32 sigmoid: measured 1.1e-7
        # float32 vs float64 of coordinates up to 3000 px: measured 2.1e-4 over 300 cases (1 ulp there: 2.4e-4)
        np.testing.assert_allclose(g["boxes"].numpy(), w["boxes"], rtol=2e-7, atol=3e-4)


def test_sizes_are_width_height():
    pp = RTDETRPostProcessor(num_classes=1, num_top_queries=1)
    (res,) = pp(dict(pred_logits=torch.zeros(1, 1, 1), pred_boxes=torch.tensor([[[0.5, 0.5, 1.0, 1.0]]])),
                torch.tensor([[640, 480]]))
    assert res["boxes"].tolist() == [[0.0, 0.0, 640.0, 480.0]]
    assert res["labels"].tolist() == [0] and res["scores"].tolist() == [0.5]


def test_softmax_form_uses_the_official_implicit_dim():
    # official: F.softmax(logits) without dim -> dim 0 (the batch) for 3-D logits
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    boxes = rng.uniform(0.1, 0.5, (2, 5, 4)).astype(np.float32)
    sizes = np.array([[100, 200], [300, 400]])
    e = np.exp(logits.astype(np.float64) - logits.max(0, keepdims=True))
    probs = (e / e.sum(0, keepdims=True))[:, :, :-1]
    for k, topk in ((10, False), (3, True)):
        pp = RTDETRPostProcessor(num_classes=3, use_focal_loss=False, num_top_queries=k)
        res = pp(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)), torch.tensor(sizes))
        for b in range(2):
            scores, labels = probs[b].max(-1), probs[b].argmax(-1)
            cx, cy, w, h = boxes[b].astype(np.float64).T
            xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * np.tile(sizes[b], 2)
            order = np.argsort(-scores, kind="stable")[:k] if topk else np.arange(5)
            # float32 vs float64: measured scores 1.6e-7 relative, boxes (<= 280 px) 2.7e-5 absolute
            np.testing.assert_allclose(res[b]["scores"].numpy(), scores[order], rtol=1e-6)
            np.testing.assert_array_equal(res[b]["labels"].numpy(), labels[order])
            np.testing.assert_allclose(res[b]["boxes"].numpy(), xyxy[order], rtol=0, atol=1e-4)


def test_deploy_returns_a_tuple_before_any_remap():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(2, 6, 80)).astype(np.float32))
    boxes = torch.tensor(rng.uniform(0.1, 0.5, (2, 6, 4)).astype(np.float32))
    pp = RTDETRPostProcessor(num_classes=80, num_top_queries=7, remap_mscoco_category=True)
    listed = pp(dict(pred_logits=logits, pred_boxes=boxes), torch.tensor([[640, 640], [320, 240]]))
    assert pp.deploy() is pp and pp.deploy_mode and not pp.training
    labels, out_boxes, scores = pp(dict(pred_logits=logits, pred_boxes=boxes), torch.tensor([[640, 640], [320, 240]]))
    assert labels.shape == (2, 7) and out_boxes.shape == (2, 7, 4) and scores.shape == (2, 7)
    assert int(labels.max()) < 80  # class indices: the official deploy path skips the remap
    for b in range(2):
        mapped = [coco_categories.mscoco_label2category[int(x)] for x in labels[b]]
        assert listed[b]["labels"].tolist() == mapped
        np.testing.assert_array_equal(listed[b]["scores"].numpy(), scores[b].numpy())


def test_remap_uses_coco_category_ids():
    logits = torch.full((1, 3, 80), -10.0)
    logits[0, 0, 0] = 5.0   # person -> 1
    logits[0, 1, 11] = 4.0  # label 11 -> stop sign, id 13
    logits[0, 2, 79] = 3.0  # toothbrush -> 90
    pp = RTDETRPostProcessor(num_classes=80, num_top_queries=3, remap_mscoco_category=True)
    (res,) = pp(dict(pred_logits=logits, pred_boxes=torch.full((1, 3, 4), 0.5)), torch.tensor([[10, 10]]))
    assert res["labels"].tolist() == [1, 13, 90]


def test_coco_tables():
    names = coco_categories.mscoco_category2name
    assert len(names) == 80
    assert sorted(set(range(1, 91)) - set(names)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert names[1] == "person" and names[13] == "stop sign" and names[90] == "toothbrush"
    l2c, c2l = coco_categories.mscoco_label2category, coco_categories.mscoco_category2label
    assert [l2c[i] for i in range(80)] == sorted(names)
    assert all(c2l[l2c[i]] == i for i in range(80))


def test_probes_record_results():
    pp = RTDETRPostProcessor(num_classes=2, num_top_queries=2)
    with probes.recording() as rec:
        res = pp(dict(pred_logits=torch.tensor([[[0.0, 1.0], [2.0, -1.0]]]), pred_boxes=torch.full((1, 2, 4), 0.5)),
                 torch.tensor([[2, 2]]))
    rec = dict(rec)
    assert rec["postprocessor.labels"].tolist() == [[0, 1]]
    assert rec["postprocessor.scores"][0].tolist() == res[0]["scores"].tolist()
    assert rec["postprocessor.boxes"].shape == (1, 2, 4)
