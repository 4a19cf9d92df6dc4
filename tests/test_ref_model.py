"""The whole reference model from the official configs: every depth builds and runs,
a training step returns the official loss keys with finite values, and backward
reaches every trainable parameter."""
import numpy as np
import pytest
import torch

import reference_pytorch
from parity.run import make_batch
from reference_pytorch.backend import targets_from_numpy

CONFIGS = {d: f"configs/rtdetr/rtdetr_{d}_6x_coco.yml" for d in ("r18vd", "r34vd", "r50vd", "r101vd")}
# The official criterion's keys: three terms (vfl, bbox, giou) each for the last layer, the
# other layers, the encoder proposals and every dn layer: 3 + 3 * (L - 1) + 3 + 3 * L, so 21
# for r18vd (3 decoder layers), 27 for r34vd (4), 39 for r50vd (6).
LOSS_KEYS = {"r18vd": 21, "r34vd": 27, "r50vd": 39}


@pytest.mark.parametrize("depth", sorted(CONFIGS))
def test_every_depth_builds_and_runs_eval_at_a_small_size(depth):
    built = reference_pytorch.build(CONFIGS[depth])
    model = built.model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 160, 160))
    assert out["pred_logits"].shape == (1, 300, 80) and out["pred_boxes"].shape == (1, 300, 4)
    assert torch.isfinite(out["pred_logits"]).all() and ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


@pytest.mark.parametrize("depth", sorted(LOSS_KEYS))
def test_training_step_returns_official_loss_keys_and_reaches_every_parameter(depth):
    built = reference_pytorch.build(CONFIGS[depth], {"RTDETR": {"multi_scale": None}})
    model = built.model.train()
    images, targets = make_batch(seed=1, batch=2, size=160, num_classes=80, gt_counts=[3, 5])
    outputs = model(torch.from_numpy(images), targets_from_numpy(targets))
    losses = built.criterion(outputs, targets_from_numpy(targets))
    assert len(losses) == LOSS_KEYS[depth]
    assert list(losses)[:3] == ["loss_vfl", "loss_bbox", "loss_giou"]
    assert all(np.isfinite(float(v)) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
