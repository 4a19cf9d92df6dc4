"""Twin parity of SetCriterion: every loss term and the gradients with respect to
every output's logits and boxes (main, auxiliary, denoising), Jittor against the
reference, on hypothesis-generated batches: zero-GT images and zero-GT batches,
every class id, tiny/huge/border boxes, predictions that coincide with their ground
truth (|x| and max/min ties), logits exactly 0 and large. The matcher's decisions
are replayed from the reference so the losses are compared on the same matching
(the matcher's own parity is in test_twin_matcher.py)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from rtdetr_common import probes
from rtdetr_jittor._env import jt
from rtdetr_jittor.rtdetr.matcher import HungarianMatcher as JMatcher
from rtdetr_jittor.rtdetr.rtdetr_criterion import SetCriterion as JCriterion
from reference_pytorch.rtdetr.matcher import HungarianMatcher as RMatcher
from reference_pytorch.rtdetr.rtdetr_criterion import SetCriterion as RCriterion

pytestmark = pytest.mark.parity

MATCH_W = {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}
WEIGHTS = {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2, "loss_focal": 1, "loss_bce": 1,
           "loss_ce": 1, "cardinality_error": 1, "class_error": 1}
LOSS_SETS = [["vfl", "boxes"], ["focal", "bce", "boxes"], ["labels", "cardinality", "boxes"]]

# Tolerances (relative to each loss value / to each gradient array's max magnitude).
# Target 1e-5; measured over 300 random cases: losses >= 0.1 within 7.8e-7 relative,
# gradients (scale >= 0.1) within 1.5e-6 relative; below those, absolute floors apply.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-5
# Absolute floors for all-but-zero values. Losses: weight (<= 5) x a mean of O(1) terms
# rounded at 1 (2 ulp = 1.2e-7): Jittor's -Ofast kernels reassociate, e.g. GIoU(a, a)
# = 1 - 1e-7 where torch gives exactly 1 (measured 1.06e-7 on loss_giou = 0), and a
# small CE loss log(1 + e) carries fl(1 + e)'s rounding (measured 1.2e-7 absolute).
# Gradients: probability differences in [-1, 1] times weights <= 1.5 * 5 / num_boxes,
# float32 cancellation at 1 leaves up to 4.5e-7 (measured 9.7e-8; e.g. torch's
# softmax(target) - 1 rounds to 0 where the exact value, Jittor's, is -1.6e-30).
LOSS_ATOL = 6e-7
GRAD_ATOL = 5e-7


def _boxes(rng, n, kind):
    """(n, 4) cxcywh boxes: 'normal', 'tiny' (1e-4 sides), 'huge' (whole image) or 'border'."""
    if kind == "tiny":
        return np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), np.full((n, 2), 1e-4)], -1).astype(np.float32)
    if kind == "huge":
        return np.concatenate([np.full((n, 2), 0.5), np.ones((n, 2))], -1).astype(np.float32)
    if kind == "border":
        c = rng.choice([0.0, 1.0], (n, 2))
        return np.concatenate([c, rng.uniform(0.05, 0.5, (n, 2))], -1).astype(np.float32)
    return np.concatenate([rng.uniform(0.05, 0.95, (n, 2)), rng.uniform(0.02, 0.6, (n, 2))], -1).astype(np.float32)


@st.composite
def cases(draw):
    bs = draw(st.integers(1, 3))
    counts = draw(st.one_of(st.just([0] * bs), st.lists(st.integers(0, 4), min_size=bs, max_size=bs)))
    num_classes = draw(st.sampled_from([1, 3, 80]))
    q = draw(st.integers(4, 8))
    layers = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    losses = draw(st.sampled_from(LOSS_SETS))
    box_kind = draw(st.sampled_from(["normal", "normal", "tiny", "huge", "border"]))
    logit_kind = draw(st.sampled_from(["normal", "zeros", "large"]))
    coincide = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(counts=counts, num_classes=num_classes, q=q, layers=layers, groups=groups, losses=losses,
                box_kind=box_kind, logit_kind=logit_kind, coincide=coincide, seed=seed)


def build(case):
    """NumPy outputs/targets for one case (aux: layers entries, dn only when GT exists)."""
    rng = np.random.default_rng(case["seed"])
    counts, c, q = case["counts"], case["num_classes"], case["q"]
    bs = len(counts)
    n_logits = c + 1 if "labels" in case["losses"] else c
    labels = [rng.integers(0, c, n) for n in counts]
    if c > 1:  # every class id shows up across the batch when there is room
        flat = np.concatenate(labels) if sum(counts) else np.zeros(0, np.int64)
        flat[: min(len(flat), c)] = np.arange(min(len(flat), c))
        labels = np.split(flat, np.cumsum(counts)[:-1])
    gt_boxes = [_boxes(rng, n, case["box_kind"]) for n in counts]

    def head(nq):
        if case["logit_kind"] == "zeros":
            logits = np.where(rng.random((bs, nq, n_logits)) < 0.5, 0.0, rng.normal(0, 2, (bs, nq, n_logits)))
        elif case["logit_kind"] == "large":
            logits = rng.choice([-30.0, -12.0, 0.0, 12.0, 30.0], (bs, nq, n_logits)) + rng.normal(0, 1, (bs, nq, n_logits))
        else:
            logits = rng.normal(-1, 2.5, (bs, nq, n_logits))
        boxes = np.stack([_boxes(rng, nq, case["box_kind"]) for _ in range(bs)])
        if case["coincide"]:  # some predictions exactly on a GT box (ties in |x| and max/min)
            for b, g in enumerate(gt_boxes):
                boxes[b, : len(g)] = g[: nq]
        return dict(pred_logits=logits.astype(np.float32), pred_boxes=boxes.astype(np.float32))

    out = head(q)
    out["aux_outputs"] = [head(q) for _ in range(case["layers"])]
    max_gt = max(counts)
    dn = None
    if max_gt > 0:
        g = case["groups"]
        out["dn_aux_outputs"] = [head(2 * max_gt * g) for _ in range(case["layers"])]
        dn = dict(dn_positive_idx=[np.concatenate([np.arange(n) + 2 * max_gt * k for k in range(g)]).astype(np.int64)
                                   for n in counts],
                  dn_num_group=g, dn_num_split=[2 * max_gt * g, q])
    targets = [dict(labels=l.astype(np.int64), boxes=b) for l, b in zip(labels, gt_boxes)]
    return out, dn, targets


def _convert(out, dn, targets, tensor, index):
    def conv(o):
        r = {k: tensor(v) for k, v in o.items() if k.startswith("pred")}
        for k in ("aux_outputs", "dn_aux_outputs"):
            if k in o:
                r[k] = [conv(x) for x in o[k]]
        return r
    r = conv(out)
    if dn is not None:
        r["dn_meta"] = dict(dn, dn_positive_idx=[index(p) for p in dn["dn_positive_idx"]])
    t = [dict(labels=index(x["labels"]), boxes=tensor(x["boxes"], grad=False)) for x in targets]
    return r, t


def _leaves(o):
    """Every pred tensor in a fixed order: main, aux..., dn..."""
    res = [o["pred_logits"], o["pred_boxes"]]
    for k in ("aux_outputs", "dn_aux_outputs"):
        for x in o.get(k, []):
            res += [x["pred_logits"], x["pred_boxes"]]
    return res


def run_twins(case, alpha=0.75):
    out, dn, targets = build(case)
    c = case["num_classes"]
    rc = RCriterion(RMatcher(MATCH_W, use_focal_loss=True), WEIGHTS, case["losses"], alpha=alpha, num_classes=c)
    jc = JCriterion(JMatcher(MATCH_W, use_focal_loss=True), WEIGHTS, case["losses"], alpha=alpha, num_classes=c)

    out_t, tg_t = _convert(out, dn, targets, lambda v, grad=True: torch.tensor(v, requires_grad=grad),
                           lambda v: torch.tensor(v, dtype=torch.int64))
    with probes.recording() as rec:
        loss_t = rc(out_t, tg_t)
    decisions = iter([v for k, v in rec if k == "matcher.indices"])

    out_j, tg_j = _convert(out, dn, targets, lambda v, grad=True: jt.array(v), lambda v: jt.array(v).int64())
    with probes.forcing({"matcher.indices": lambda computed: next(decisions)}):
        loss_j = jc(out_j, tg_j)

    keys = list(loss_t)
    r = np.random.default_rng(case["seed"] + 1).uniform(0.5, 1.5, len(keys))  # weigh terms differently
    leaves_t, leaves_j = _leaves(out_t), _leaves(out_j)
    total_t = sum(float(w) * loss_t[k] for w, k in zip(r, keys) if loss_t[k].requires_grad)
    grads_t = torch.autograd.grad(total_t, leaves_t, allow_unused=True)
    total_j = sum(float(w) * loss_j[k] for w, k in zip(r, keys) if k not in ("cardinality_error", "class_error"))
    grads_j = jt.grad(total_j, leaves_j)
    grads_t = [np.zeros(tuple(x.shape), np.float32) if g is None else g.numpy() for g, x in zip(grads_t, leaves_t)]
    return loss_t, loss_j, grads_t, [g.numpy() for g in grads_j]


@given(case=cases())
def test_losses_and_gradients_match(case):
    loss_t, loss_j, grads_t, grads_j = run_twins(case)
    assert list(loss_j) == list(loss_t)
    for k in loss_t:
        if k == "class_error" and case["logit_kind"] == "zeros":
            continue  # top-1 among exactly tied logits: each framework picks its own (declared tie)
        t, j = float(loss_t[k].item()), float(loss_j[k].item())
        assert math.isfinite(t) and math.isfinite(j), (k, t, j)
        assert abs(j - t) <= LOSS_RTOL * abs(t) + LOSS_ATOL, (k, t, j)
    out, _, targets = build(case)
    sides = [float(np.concatenate([b["boxes"][:, 2:].ravel() for b in targets] + [np.ones(1)]).min())]
    for i, (gt, gj) in enumerate(zip(grads_t, grads_j)):
        scale = float(np.abs(gt).max())
        if i % 2 == 1:
            # boxes: a GIoU/L1 gradient entry is a sum of terms ~ 1/side that may cancel
            # exactly (prediction == GT: torch gives 0, Jittor 8.5e-7 on sides ~0.1), so
            # judge it against that scale
            scale = max(scale, 1.0 / min(sides[0], float(_leaves(out)[i][..., 2:].min())))
        assert gj.shape == gt.shape
        assert float(np.abs(gj - gt).max()) <= GRAD_RTOL * scale + GRAD_ATOL, (i, scale, float(np.abs(gj - gt).max()))


@pytest.mark.parametrize("layers,counts,n_keys", [(3, [2, 1], 21), (6, [2, 1], 39), (3, [0, 0], 12), (6, [0, 0], 21)])
def test_official_key_lists(layers, counts, n_keys):
    case = dict(counts=counts, num_classes=80, q=6, layers=layers, groups=2, losses=["vfl", "boxes"],
                box_kind="normal", logit_kind="normal", coincide=False, seed=7)
    loss_t, loss_j, _, _ = run_twins(case)
    assert list(loss_j) == list(loss_t) and len(loss_j) == n_keys


def test_hand_worked_vfl_l1_giou_on_jittor():
    # the reference test's hand example: all-zero logits, query 0 (0.5, 0.5, 0.2, 0.4) contains
    # GT (0.5, 0.5, 0.2, 0.2) of class 1: VFL 1.0625 ln 2, L1 0.2 (x5), GIoU 0.5 (1 - 0.5, x2)
    crit = JCriterion(JMatcher(MATCH_W, use_focal_loss=True), {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2},
                      ["vfl", "boxes"], alpha=0.75, num_classes=2)
    outputs = dict(pred_logits=jt.zeros((1, 2, 2)),
                   pred_boxes=jt.array(np.array([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.05, 0.05]]], np.float32)))
    losses = crit(outputs, [dict(labels=jt.array(np.array([1])).int64(),
                                 boxes=jt.array(np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)))])
    assert losses["loss_vfl"].item() == pytest.approx(1.0625 * math.log(2), abs=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(1.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(1.0, abs=1e-6)


def test_l1_gradient_is_zero_where_prediction_equals_target():
    # torch: d|x|/dx = 0 at 0; Jittor's native abs would give 1 there
    crit = JCriterion(JMatcher(MATCH_W, use_focal_loss=True), {"loss_bbox": 1}, ["boxes"], num_classes=2)
    boxes = jt.array(np.array([[[0.5, 0.5, 0.2, 0.4]]], np.float32))
    losses = crit(dict(pred_logits=jt.zeros((1, 1, 2)), pred_boxes=boxes),
                  [dict(labels=jt.array(np.array([1])).int64(), boxes=jt.array(np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)))])
    g = jt.grad(losses["loss_bbox"], boxes).numpy()
    np.testing.assert_array_equal(g, [[[0.0, 0.0, 0.0, 1.0]]])


def test_own_matchers_agree_without_replay():
    # generic inputs (no ties): each side's own matcher decisions, then the same losses
    case = dict(counts=[3, 0, 2], num_classes=80, q=8, layers=3, groups=2, losses=["vfl", "boxes"],
                box_kind="normal", logit_kind="normal", coincide=False, seed=3)
    out, dn, targets = build(case)
    rc = RCriterion(RMatcher(MATCH_W, use_focal_loss=True), WEIGHTS, case["losses"], alpha=0.75, num_classes=80)
    jc = JCriterion(JMatcher(MATCH_W, use_focal_loss=True), WEIGHTS, case["losses"], alpha=0.75, num_classes=80)
    out_t, tg_t = _convert(out, dn, targets, lambda v, grad=True: torch.tensor(v), lambda v: torch.tensor(v, dtype=torch.int64))
    out_j, tg_j = _convert(out, dn, targets, lambda v, grad=True: jt.array(v), lambda v: jt.array(v).int64())
    with probes.recording() as rec_t:
        loss_t = rc(out_t, tg_t)
    with probes.recording() as rec_j:
        loss_j = jc(out_j, tg_j)
    dec_t = [[(r.tolist(), c.tolist()) for r, c in v] for k, v in rec_t if k == "matcher.indices"]
    dec_j = [[(r.numpy().tolist(), c.numpy().tolist()) for r, c in v] for k, v in rec_j if k == "matcher.indices"]
    assert dec_j == dec_t and len(dec_t) == 4  # main + 3 aux
    for k in loss_t:
        assert abs(loss_j[k].item() - loss_t[k].item()) <= LOSS_RTOL * abs(loss_t[k].item()) + LOSS_ATOL, k
