"""The RT-DETR post-processor (official ``RTDETRPostProcessor``): boxes to xyxy in
pixels of the original image, then the top ``num_top_queries`` (query, class)
scores. Focal form: sigmoid and top-k over all (query, class) pairs. Softmax form:
as the official code, ``F.softmax`` without a dim, which torch resolves to dim 0
(the batch) for 3-D logits, then the best non-"no object" class per query.

Probes: ``postprocessor.labels``, ``postprocessor.boxes``, ``postprocessor.scores``
(before any COCO remap).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rtdetr_common import probes
from rtdetr_common.data.coco_categories import mscoco_label2category

from .box_ops import box_cxcywh_to_xyxy


class RTDETRPostProcessor(nn.Module):
    """``forward(outputs, orig_target_sizes)``, sizes (B, 2) as [w, h]. Returns one
    dict ``{labels, boxes, scores}`` per image, or ``(labels, boxes, scores)`` after
    ``deploy()``. ``remap_mscoco_category`` turns labels into COCO category ids."""

    def __init__(self, num_classes=80, use_focal_loss=True, num_top_queries=300, remap_mscoco_category=False):
        super().__init__()
        self.use_focal_loss = use_focal_loss
        self.num_top_queries = num_top_queries
        self.num_classes = num_classes
        self.remap_mscoco_category = remap_mscoco_category
        self.deploy_mode = False

    def extra_repr(self) -> str:
        return f'use_focal_loss={self.use_focal_loss}, num_classes={self.num_classes}, num_top_queries={self.num_top_queries}'

    def forward(self, outputs, orig_target_sizes):
        logits, boxes = outputs['pred_logits'], outputs['pred_boxes']

        bbox_pred = box_cxcywh_to_xyxy(boxes)  # torchvision's box_convert: the same arithmetic
        bbox_pred *= orig_target_sizes.repeat(1, 2).unsqueeze(1)

        if self.use_focal_loss:
            scores = F.sigmoid(logits)
            flat_scores = scores.flatten(1)
            _, index = torch.topk(flat_scores, self.num_top_queries, dim=-1)
            probes.record('postprocessor.flat_scores', flat_scores)
            index = probes.decide('postprocessor.topk_index', index)
            if isinstance(index, np.ndarray):
                index = torch.as_tensor(np.asarray(index))
            scores = torch.gather(flat_scores, 1, index)
            labels = index % self.num_classes
            index = index // self.num_classes
            boxes = bbox_pred.gather(dim=1, index=index.unsqueeze(-1).repeat(1, 1, bbox_pred.shape[-1]))

        else:
            scores = F.softmax(logits, dim=_implicit_softmax_dim(logits))[:, :, :-1]
            scores, labels = scores.max(dim=-1)
            boxes = bbox_pred
            if scores.shape[1] > self.num_top_queries:
                scores, index = torch.topk(scores, self.num_top_queries, dim=-1)
                labels = torch.gather(labels, dim=1, index=index)
                boxes = torch.gather(boxes, dim=1, index=index.unsqueeze(-1).tile(1, 1, boxes.shape[-1]))

        probes.record('postprocessor.labels', labels)
        probes.record('postprocessor.boxes', boxes)
        probes.record('postprocessor.scores', scores)

        if self.deploy_mode:
            return labels, boxes, scores

        if self.remap_mscoco_category:
            labels = torch.tensor([mscoco_label2category[int(x.item())] for x in labels.flatten()])\
                .to(boxes.device).reshape(labels.shape)

        results = []
        for lab, box, sco in zip(labels, boxes, scores):
            result = dict(labels=lab, boxes=box, scores=sco)
            results.append(result)

        return results

    def deploy(self):
        """Eval mode; ``forward`` then returns a ``(labels, boxes, scores)`` tuple."""
        self.eval()
        self.deploy_mode = True
        return self

    @property
    def iou_types(self):
        return ('bbox', )


def _implicit_softmax_dim(x):
    """The dim torch picks for ``F.softmax(x)`` without one (0 for 0-, 1- and 3-D input)."""
    return 0 if x.ndim in (0, 1, 3) else 1
