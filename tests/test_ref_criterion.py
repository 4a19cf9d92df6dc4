"""Reference SetCriterion: hand-worked VFL / L1 / GIoU values, every loss term against
an independent element-by-element formula, num_boxes clamping and denoising
scaling, loss key lists and counts for 3- and 6-layer outputs (with and without
ground truth), weighting, probes, and a float64 gradient check."""
import math

import numpy as np
import pytest
import torch

from rtdetr_common import probes
from reference_pytorch.rtdetr.matcher import HungarianMatcher
from reference_pytorch.rtdetr.rtdetr_criterion import SetCriterion

MATCH_W = {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}
LOSS_W = {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2}


def make_criterion(losses=("vfl", "boxes"), weight_dict=None, alpha=0.75, num_classes=2, **kw):
    return SetCriterion(HungarianMatcher(MATCH_W, use_focal_loss=True), dict(weight_dict or LOSS_W),
                        list(losses), alpha=alpha, gamma=2.0, num_classes=num_classes, **kw)


def tgt(labels, boxes):
    return dict(labels=torch.tensor(labels, dtype=torch.int64), boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))


def test_hand_worked_vfl_l1_giou():
    # one image, two queries, two classes, all logits 0 (sigmoid 0.5, BCE = ln 2 for any target)
    # GT: class 1 at (0.5, 0.5, 0.2, 0.2); query 0 at (0.5, 0.5, 0.2, 0.4) contains it:
    # IoU = 0.04 / 0.08 = 0.5 = GIoU (the hull is query 0 itself); L1 = |0.4 - 0.2| = 0.2.
    # VFL weights: matched (q0, c1) -> IoU 0.5; the three others -> 0.75 * 0.5^2 = 0.1875.
    # mean over queries then sum over classes: (0.1875 + 0.1875)/2 + (0.5 + 0.1875)/2 = 0.53125,
    # times ln 2, times num_queries 2 / num_boxes 1.
    outputs = dict(pred_logits=torch.zeros(1, 2, 2),
                   pred_boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.05, 0.05]]]))
    with probes.recording() as rec:
        losses = make_criterion()(outputs, [tgt([1], [[0.5, 0.5, 0.2, 0.2]])])
    assert list(losses) == ["loss_vfl", "loss_bbox", "loss_giou"]
    assert losses["loss_vfl"].item() == pytest.approx(1.0625 * math.log(2), abs=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.2, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2 * (1 - 0.5), abs=1e-6)
    rec = dict(rec)
    assert rec["matcher.indices"][0][0].tolist() == [0] and rec["matcher.indices"][0][1].tolist() == [0]
    for k, v in losses.items():
        assert rec[f"criterion.{k}"] is v


def _bce(x, t):
    """BCE-with-logits of one element, plain Python."""
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _iou_cxcywh(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union, inter / union - (hull - union) / hull


def _problem(seed, num_classes=3, extra_class=False):
    rng = np.random.default_rng(seed)
    bs, q = 3, 5
    logits = rng.normal(0, 2, (bs, q, num_classes + int(extra_class))).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (bs, q, 2)), rng.uniform(0.05, 0.4, (bs, q, 2))], -1).astype(np.float32)
    counts = [2, 0, 3]
    targets = [(rng.integers(0, num_classes, n), np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))], -1))
               for n in counts]
    forced = [(np.array([4, 1]), np.array([1, 0])), (np.zeros(0, np.int64), np.zeros(0, np.int64)),
              (np.array([0, 2, 3]), np.array([2, 0, 1]))]
    return logits, boxes, targets, forced


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_loss_against_independent_formulas(seed):
    logits, boxes, targets, forced = _problem(seed)
    bs, q, c = logits.shape
    crit = make_criterion(losses=["vfl", "boxes", "focal", "bce"], num_classes=c,
                          weight_dict={"loss_vfl": 1, "loss_bbox": 1, "loss_giou": 1, "loss_focal": 1, "loss_bce": 1})
    with probes.forcing({"matcher.indices": forced}):
        losses = crit(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)),
                      [tgt(l.tolist(), b.tolist()) for l, b in targets])
    num_boxes = 5.0
    want = dict(loss_vfl=0.0, loss_bbox=0.0, loss_giou=0.0, loss_focal=0.0, loss_bce=0.0)
    for b in range(bs):
        match = dict(zip(forced[b][0].tolist(), forced[b][1].tolist()))
        for qi in range(q):
            j = match.get(qi)
            if j is not None:
                pb, tb = boxes[b, qi].astype(float), targets[b][1][j].astype(np.float32).astype(float)
                iou, giou = _iou_cxcywh(pb, tb)
                want["loss_bbox"] += float(np.abs(pb - tb).sum())
                want["loss_giou"] += 1 - giou
            for ci in range(c):
                x = float(logits[b, qi, ci])
                t = 1.0 if (j is not None and targets[b][0][j] == ci) else 0.0
                p = _sig(x)
                score = iou * t if j is not None else 0.0
                w_vfl = 0.75 * p ** 2 * (1 - t) + score
                want["loss_vfl"] += w_vfl * _bce(x, score)
                p_t = p * t + (1 - p) * (1 - t)
                alpha_t = 0.75 * t + 0.25 * (1 - t)
                want["loss_focal"] += alpha_t * _bce(x, t) * (1 - p_t) ** 2
                want["loss_bce"] += _bce(x, t)
    for k, v in want.items():
        # float32 terms summed over 45 elements vs float64: measured max relative 2e-7
        assert losses[k].item() == pytest.approx(v / num_boxes, rel=2e-6), k


def test_cross_entropy_and_cardinality_against_independent_formulas():
    logits, boxes, targets, forced = _problem(3, num_classes=3, extra_class=True)
    bs, q, c1 = logits.shape
    crit = make_criterion(losses=["labels", "cardinality"], num_classes=3, eos_coef=0.1,
                          weight_dict={"loss_ce": 1, "cardinality_error": 1, "class_error": 1})
    with probes.forcing({"matcher.indices": forced}):
        losses = crit(dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes)),
                      [tgt(l.tolist(), b.tolist()) for l, b in targets])
    num, den, correct, matched = 0.0, 0.0, 0, 0
    for b in range(bs):
        match = dict(zip(forced[b][0].tolist(), forced[b][1].tolist()))
        for qi in range(q):
            z = logits[b, qi].astype(float)
            logp = z - z.max() - math.log(np.exp(z - z.max()).sum())
            t = int(targets[b][0][match[qi]]) if qi in match else 3
            w = 0.1 if t == 3 else 1.0
            num += -w * logp[t]
            den += w
            if qi in match:
                matched += 1
                correct += int(np.argmax(z) == t)
    assert losses["loss_ce"].item() == pytest.approx(num / den, rel=2e-6)  # float32 vs float64: measured 2.1e-7
    assert losses["class_error"].item() == pytest.approx(100 - 100 * correct / matched, abs=1e-4)
    card = [(logits[b].argmax(-1) != 3).sum() for b in range(bs)]
    want_card = np.mean([abs(card[b] - len(targets[b][0])) for b in range(bs)])
    assert losses["cardinality_error"].item() == pytest.approx(want_card, abs=1e-6)


def test_unweighted_terms_are_dropped_and_weights_applied():
    logits, boxes, targets, forced = _problem(4)
    outputs = dict(pred_logits=torch.tensor(logits), pred_boxes=torch.tensor(boxes))
    t = [tgt(l.tolist(), b.tolist()) for l, b in targets]
    with probes.forcing({"matcher.indices": forced}):
        one = make_criterion(weight_dict={"loss_vfl": 1, "loss_bbox": 1, "loss_giou": 1}, num_classes=3)(outputs, t)
        weighted = make_criterion(weight_dict={"loss_vfl": 3, "loss_giou": 0.5}, num_classes=3)(outputs, t)
    assert list(weighted) == ["loss_vfl", "loss_giou"]
    assert weighted["loss_vfl"].item() == pytest.approx(3 * one["loss_vfl"].item(), rel=1e-6)
    assert weighted["loss_giou"].item() == pytest.approx(0.5 * one["loss_giou"].item(), rel=1e-6)


def fake_outputs(num_layers, counts, num_classes=3, q=6, dn_groups=2, seed=0, with_dn=True):
    """Training outputs shaped like the decoder's: aux = (num_layers - 1) layers + encoder."""
    rng = np.random.default_rng(seed)
    bs = len(counts)

    def head(nq):
        return dict(pred_logits=torch.tensor(rng.normal(0, 2, (bs, nq, num_classes)).astype(np.float32), requires_grad=True),
                    pred_boxes=torch.tensor(np.concatenate([rng.uniform(0.2, 0.8, (bs, nq, 2)),
                                                            rng.uniform(0.05, 0.4, (bs, nq, 2))], -1).astype(np.float32),
                                            requires_grad=True))

    out = head(q)
    out["aux_outputs"] = [head(q) for _ in range(num_layers)]
    max_gt = max(counts)
    if with_dn and max_gt > 0:
        out["dn_aux_outputs"] = [head(2 * max_gt * dn_groups) for _ in range(num_layers)]
        out["dn_meta"] = dict(dn_positive_idx=[torch.cat([torch.arange(n) + 2 * max_gt * g for g in range(dn_groups)])
                                               for n in counts],
                              dn_num_group=dn_groups, dn_num_split=[2 * max_gt * dn_groups, q])
    targets = [tgt(rng.integers(0, num_classes, n).tolist(),
                   np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))], -1).tolist())
               for n in counts]
    return out, targets


@pytest.mark.parametrize("layers,counts,n_keys", [(3, [2, 1], 21), (6, [2, 1], 39), (3, [0, 0], 12), (6, [0, 0], 21),
                                                  (3, [0, 3], 21)])
def test_loss_keys_and_counts(layers, counts, n_keys):
    out, targets = fake_outputs(layers, counts)
    losses = make_criterion(num_classes=3)(out, targets)
    base = ["loss_vfl", "loss_bbox", "loss_giou"]
    want = list(base)
    want += [f"{k}_aux_{i}" for i in range(layers) for k in base]
    if max(counts) > 0:
        want += [f"{k}_dn_{i}" for i in range(layers) for k in base]
    assert list(losses) == want
    assert len(losses) == n_keys
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert out["pred_logits"].grad is not None and out["aux_outputs"][0]["pred_boxes"].grad is not None


def test_zero_gt_batch_clamps_num_boxes_to_one():
    out, targets = fake_outputs(3, [0, 0], with_dn=False)
    losses = make_criterion(num_classes=3)(out, targets)
    x = out["pred_logits"].detach().numpy().astype(float)
    p = 1 / (1 + np.exp(-x))
    bce = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))  # target 0
    # float32 sum of 108 terms vs float64: measured relative 1.6e-7
    assert losses["loss_vfl"].item() == pytest.approx(float((0.75 * p ** 2 * bce).sum()) / 1.0, rel=2e-6)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0


def test_denoising_uses_group_indices_and_scaled_num_boxes():
    counts, groups = [2, 1], 3
    out, targets = fake_outputs(3, counts, dn_groups=groups)
    # make denoising positives equal to their GT plus 0.01 in cx: L1 = 0.01 per positive
    for dn in out["dn_aux_outputs"]:
        boxes = dn["pred_boxes"].detach().clone()
        for b, n in enumerate(counts):
            pos = out["dn_meta"]["dn_positive_idx"][b]
            boxes[b, pos] = targets[b]["boxes"].repeat(groups, 1) + torch.tensor([0.01, 0, 0, 0])
        dn["pred_boxes"] = boxes
    losses = make_criterion(num_classes=3, weight_dict={"loss_vfl": 1, "loss_bbox": 1, "loss_giou": 1})(out, targets)
    # sum of L1 = 0.01 * 3 GT * 3 groups; num_boxes = 3 GT * 3 groups
    for i in range(3):
        assert losses[f"loss_bbox_dn_{i}"].item() == pytest.approx(0.01, abs=1e-6)


def test_get_cdn_matched_indices():
    dn_meta = dict(dn_positive_idx=[torch.tensor([0, 1, 6, 7]), torch.zeros(0, dtype=torch.int64)], dn_num_group=2)
    idx = SetCriterion.get_cdn_matched_indices(dn_meta, [tgt([0, 2], [[0.5] * 4] * 2), tgt([], [])])
    assert idx[0][0].tolist() == [0, 1, 6, 7] and idx[0][1].tolist() == [0, 1, 0, 1]
    assert idx[1][0].tolist() == [] and idx[1][1].dtype == torch.int64
    with pytest.raises(AssertionError):
        SetCriterion.get_cdn_matched_indices(dict(dn_positive_idx=[torch.tensor([0, 1])], dn_num_group=2),
                                             [tgt([0, 2], [[0.5] * 4] * 2)])


def test_float64_gradients_of_box_and_class_losses():
    logits, boxes, targets, forced = _problem(5)
    # 'bce' is left out: its one-hot target is built as ``target * 1.`` (float32), and torch
    # then computes the loss in float32 even for float64 logits, too coarse for gradcheck
    crit = make_criterion(losses=["boxes", "focal"], num_classes=3,
                          weight_dict={"loss_bbox": 5, "loss_giou": 2, "loss_focal": 1})
    t = [dict(labels=torch.tensor(l, dtype=torch.int64), boxes=torch.tensor(b, dtype=torch.float64)) for l, b in targets]

    def total(lg, bx):
        with probes.forcing({"matcher.indices": forced}):
            return sum(crit(dict(pred_logits=lg, pred_boxes=bx), t).values())

    lg = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    bx = torch.tensor(boxes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(total, (lg, bx), eps=1e-6, atol=1e-6)


def test_unknown_loss_rejected():
    out, targets = fake_outputs(3, [1])
    with pytest.raises(AssertionError):
        make_criterion(losses=["masks"], num_classes=3)(out, targets)
