"""The RT-DETR set criterion (official ``SetCriterion``): Hungarian matching of each
decoder output to the ground truth, then classification (CE, BCE, focal or
varifocal) and box (L1, GIoU) losses, for the last layer, every auxiliary output
(``_aux_{i}``) and every denoising output (``_dn_{i}``, matched by construction).

Returned losses are already multiplied by ``weight_dict`` (terms absent from it are
dropped); the total loss is their sum. Each term is recorded as the probe
``criterion.{key}``. In a data-parallel run ``num_boxes`` is all-reduced and
divided by the number of ranks, as the official criterion does. The official mask
and angle losses are not ported.

Jittor twin of ``reference_pytorch/rtdetr/rtdetr_criterion.py``. Framework
differences: indices, target classes and target scores (all gradient-free) are
built in NumPy; loss values are shape-[1] Vars (Jittor has no 0-d tensors); large
reductions accumulate in float64 (``compat.sum64``/``compat.mean64``: Jittor sums naively);
element-wise BCE is ``compat.binary_cross_entropy_with_logits`` (torch's formula and
gradient); |x| is ``compat.absolute`` (torch's zero gradient at 0); ``sigmoid`` is
``compat.sigmoid`` (Jittor's clamps logits below -30).
"""
import numpy as np

from rtdetr_jittor._env import jt
from jittor import nn

from rtdetr_common import probes
from rtdetr_jittor.compat import absolute, binary_cross_entropy_with_logits, make_buffer, mean64, sigmoid, sum64
from rtdetr_jittor.compat import to_numpy as _np
from rtdetr_jittor.compat import topk as _topk

from ..distributed import all_reduce_sum, get_world_size, is_dist_available_and_initialized
from .box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """``torchvision.ops.sigmoid_focal_loss(..., reduction='none')`` (torchvision's formula)."""
    p = sigmoid(inputs)
    ce_loss = binary_cross_entropy_with_logits(inputs, targets)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def _matched_target_boxes(targets, indices):
    """The matched targets' boxes, concatenated over the batch, in the targets' dtype (as torch.cat)."""
    boxes = np.concatenate([_np(t['boxes']).reshape(-1, 4)[_np(i)] for t, (_, i) in zip(targets, indices)], axis=0)
    return jt.array(boxes, dtype=str(boxes.dtype))


class SetCriterion(nn.Module):
    """``losses`` names the terms ('vfl', 'boxes', 'labels', 'bce', 'focal',
    'cardinality'); ``alpha``/``gamma`` are the VFL/focal parameters; ``eos_coef``
    weighs the no-object class in the CE loss."""

    def __init__(self, matcher, weight_dict, losses, alpha=0.2, gamma=2.0, eos_coef=1e-4, num_classes=80):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.losses = losses

        empty_weight = np.ones(self.num_classes + 1, dtype=np.float32)
        empty_weight[-1] = eos_coef
        self.empty_weight = make_buffer(empty_weight)

        self.alpha = alpha
        self.gamma = gamma

    def _target_classes(self, src_logits, targets, indices, idx):
        target_classes_o = np.concatenate(
            [_np(t["labels"]).astype(np.int64).reshape(-1)[_np(J)] for t, (_, J) in zip(targets, indices)])
        target_classes = np.full(tuple(src_logits.shape[:2]), self.num_classes, dtype=np.int64)
        target_classes[idx] = target_classes_o
        return target_classes, target_classes_o

    def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
        """Cross-entropy over num_classes + 1 logits, no-object weighted by ``eos_coef``."""
        assert 'pred_logits' in outputs
        src_logits = outputs['pred_logits']

        idx = self._get_src_permutation_idx(indices)
        target_classes, target_classes_o = self._target_classes(src_logits, targets, indices, idx)

        # F.cross_entropy with class weights, mean reduction: sum(w_t * nll) / sum(w_t)
        one_hot = jt.array(_one_hot(target_classes, src_logits.shape[-1]))
        nll = -(nn.log_softmax(src_logits, dim=-1) * one_hot).sum(-1)
        w = self.empty_weight.numpy()[target_classes]
        loss_ce = sum64(nll * jt.array(w)) / float(w.astype(np.float64).sum())
        losses = {'loss_ce': loss_ce}

        if log:
            losses['class_error'] = 100 - accuracy(src_logits[_vars(idx)], target_classes_o)[0]
        return losses

    def loss_labels_bce(self, outputs, targets, indices, num_boxes, log=True):
        """Sigmoid BCE against the one-hot target."""
        src_logits = outputs['pred_logits']
        idx = self._get_src_permutation_idx(indices)
        target_classes, _ = self._target_classes(src_logits, targets, indices, idx)

        target = _one_hot(target_classes, self.num_classes + 1)[..., :-1]
        loss = binary_cross_entropy_with_logits(src_logits, jt.array(target * 1.).float32())
        loss = sum64(mean64(loss, 1)) * src_logits.shape[1] / num_boxes
        return {'loss_bce': loss}

    def loss_labels_focal(self, outputs, targets, indices, num_boxes, log=True):
        """Sigmoid focal loss against the one-hot target (cast to float, as the
        reference: the official int64 target is rejected by torch >= 2)."""
        assert 'pred_logits' in outputs
        src_logits = outputs['pred_logits']

        idx = self._get_src_permutation_idx(indices)
        target_classes, _ = self._target_classes(src_logits, targets, indices, idx)

        target = _one_hot(target_classes, self.num_classes + 1)[..., :-1]
        loss = sigmoid_focal_loss(src_logits, jt.array(target.astype(np.float32)), self.alpha, self.gamma)
        loss = sum64(mean64(loss, 1)) * src_logits.shape[1] / num_boxes
        return {'loss_focal': loss}

    def loss_labels_vfl(self, outputs, targets, indices, num_boxes, log=True):
        """Varifocal loss: the matched query's target score is its (detached) IoU."""
        assert 'pred_boxes' in outputs
        idx = self._get_src_permutation_idx(indices)

        src_boxes = outputs['pred_boxes'][_vars(idx)]
        target_boxes = _matched_target_boxes(targets, indices)
        ious, _ = box_iou(box_cxcywh_to_xyxy(src_boxes.detach()), box_cxcywh_to_xyxy(target_boxes))
        ious = jt.diag(ious).detach()

        src_logits = outputs['pred_logits']
        target_classes, _ = self._target_classes(src_logits, targets, indices, idx)
        target = _one_hot(target_classes, self.num_classes + 1)[..., :-1]

        dtype = np.dtype(str(src_logits.dtype))
        target_score_o = np.zeros(target_classes.shape, dtype=dtype)
        target_score_o[idx] = ious.numpy().astype(dtype)
        target_score = jt.array((target_score_o[..., None] * target).astype(dtype), dtype=str(dtype))

        pred_score = sigmoid(src_logits).detach()
        weight = self.alpha * pred_score.pow(self.gamma) * jt.array(1 - target).float32() + target_score

        loss = binary_cross_entropy_with_logits(src_logits, target_score, weight=weight)
        loss = sum64(mean64(loss, 1)) * src_logits.shape[1] / num_boxes
        return {'loss_vfl': loss}

    def loss_cardinality(self, outputs, targets, indices, num_boxes):
        """Absolute error in the number of predictions whose argmax is not the last
        class (for logging; no gradient)."""
        pred_logits = outputs['pred_logits'].numpy()
        tgt_lengths = np.asarray([len(_np(v["labels"])) for v in targets], dtype=np.float32)
        card_pred = (pred_logits.argmax(-1) != pred_logits.shape[-1] - 1).sum(1)
        card_err = np.abs(card_pred.astype(np.float32) - tgt_lengths).mean()
        return {'cardinality_error': jt.array(np.float32(card_err)).reshape(1)}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        """L1 and GIoU losses of the matched boxes (normalised cxcywh), each / num_boxes."""
        assert 'pred_boxes' in outputs
        idx = self._get_src_permutation_idx(indices)
        src_boxes = outputs['pred_boxes'][_vars(idx)]
        target_boxes = _matched_target_boxes(targets, indices)

        losses = {}

        loss_bbox = absolute(src_boxes - target_boxes)
        losses['loss_bbox'] = sum64(loss_bbox) / num_boxes

        loss_giou = 1 - jt.diag(generalized_box_iou(
            box_cxcywh_to_xyxy(src_boxes),
            box_cxcywh_to_xyxy(target_boxes)))
        losses['loss_giou'] = sum64(loss_giou) / num_boxes
        return losses

    def _get_src_permutation_idx(self, indices):
        batch_idx = np.concatenate([np.full(len(_np(src)), i, dtype=np.int64) for i, (src, _) in enumerate(indices)])
        src_idx = np.concatenate([_np(src).astype(np.int64).reshape(-1) for (src, _) in indices])
        return batch_idx, src_idx

    def _get_tgt_permutation_idx(self, indices):
        batch_idx = np.concatenate([np.full(len(_np(tgt)), i, dtype=np.int64) for i, (_, tgt) in enumerate(indices)])
        tgt_idx = np.concatenate([_np(tgt).astype(np.int64).reshape(-1) for (_, tgt) in indices])
        return batch_idx, tgt_idx

    def get_loss(self, loss, outputs, targets, indices, num_boxes, **kwargs):
        """Dispatch one named loss."""
        loss_map = {
            'labels': self.loss_labels,
            'cardinality': self.loss_cardinality,
            'boxes': self.loss_boxes,
            'bce': self.loss_labels_bce,
            'focal': self.loss_labels_focal,
            'vfl': self.loss_labels_vfl,
        }
        assert loss in loss_map, f'do you really want to compute {loss} loss?'
        return loss_map[loss](outputs, targets, indices, num_boxes, **kwargs)

    def _weighted(self, l_dict, suffix=''):
        l_dict = {k + suffix: l_dict[k] * self.weight_dict[k] for k in l_dict if k in self.weight_dict}
        for k, v in l_dict.items():
            probes.record(f'criterion.{k}', v)
        return l_dict

    def execute(self, outputs, targets):
        """``outputs``: the model's training dict (``pred_logits``, ``pred_boxes``,
        optional ``aux_outputs``, ``dn_aux_outputs``, ``dn_meta``); ``targets``: per
        image ``labels`` (int) and ``boxes`` (normalised cxcywh). Returns the
        weighted loss terms in the official key order."""
        outputs_without_aux = {k: v for k, v in outputs.items() if 'aux' not in k}

        indices = self.matcher(outputs_without_aux, targets)

        num_boxes = sum(len(_np(t["labels"])) for t in targets)
        num_boxes = np.array([num_boxes], np.float32)
        if is_dist_available_and_initialized():
            num_boxes = all_reduce_sum(num_boxes)
        num_boxes = max(float(num_boxes[0] / np.float32(get_world_size())), 1.0)

        losses = {}
        for loss in self.losses:
            l_dict = self.get_loss(loss, outputs, targets, indices, num_boxes)
            losses.update(self._weighted(l_dict))

        if 'aux_outputs' in outputs:
            for i, aux_outputs in enumerate(outputs['aux_outputs']):
                indices = self.matcher(aux_outputs, targets)
                for loss in self.losses:
                    kwargs = {'log': False} if loss == 'labels' else {}
                    l_dict = self.get_loss(loss, aux_outputs, targets, indices, num_boxes, **kwargs)
                    losses.update(self._weighted(l_dict, f'_aux_{i}'))

        if 'dn_aux_outputs' in outputs:
            assert 'dn_meta' in outputs, ''
            indices = self.get_cdn_matched_indices(outputs['dn_meta'], targets)
            num_boxes = num_boxes * outputs['dn_meta']['dn_num_group']

            for i, aux_outputs in enumerate(outputs['dn_aux_outputs']):
                for loss in self.losses:
                    kwargs = {'log': False} if loss == 'labels' else {}
                    l_dict = self.get_loss(loss, aux_outputs, targets, indices, num_boxes, **kwargs)
                    losses.update(self._weighted(l_dict, f'_dn_{i}'))

        return losses

    @staticmethod
    def get_cdn_matched_indices(dn_meta, targets):
        """Denoising matches: image i's positive queries ``dn_positive_idx[i]`` against
        its GT indices ``0..n-1`` tiled ``dn_num_group`` times."""
        dn_positive_idx, dn_num_group = dn_meta["dn_positive_idx"], dn_meta["dn_num_group"]
        num_gts = [len(_np(t['labels'])) for t in targets]

        dn_match_indices = []
        for i, num_gt in enumerate(num_gts):
            if num_gt > 0:
                gt_idx = np.arange(num_gt, dtype=np.int64)
                gt_idx = np.tile(gt_idx, int(dn_num_group))
                assert len(_np(dn_positive_idx[i])) == len(gt_idx)
                dn_match_indices.append((_np(dn_positive_idx[i]).astype(np.int64), gt_idx))
            else:
                dn_match_indices.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))

        return dn_match_indices


def accuracy(output, target, topk=(1,)):
    """Precision@k (percent) of ``output`` (N, C) against ``target`` (N,), no gradient."""
    target = _np(target)
    if target.size == 0:
        return [jt.zeros(1)]
    maxk = max(topk)
    batch_size = target.shape[0]

    _, pred = _topk(output.detach(), maxk, 1)
    pred = pred.numpy().T
    correct = pred == target.reshape(1, -1)

    res = []
    for k in topk:
        correct_k = np.float32(correct[:k].reshape(-1).astype(np.float32).sum(0))
        res.append(jt.array(correct_k * np.float32(100.0 / batch_size)).reshape(1))
    return res


def _vars(idx):
    """A NumPy index tuple as int64 Vars (for advanced indexing)."""
    return tuple(jt.array(i).int64() for i in idx)


def _one_hot(classes, num_classes):
    """``F.one_hot`` in NumPy (int64)."""
    return (classes[..., None] == np.arange(num_classes)).astype(np.int64)
