"""Whole-model gradient parity in float64.

In float32 a ReLU input or a deformable-attention sampling point within rounding of a
kink can land on the other side in one framework, which moves whole-network gradients
by up to ~1e-2 of their scale (README, "Known gaps"). Run in double precision, both
twins take the same side of every kink, so the training forward, every loss term and
every parameter's gradient can be held to the issue's targets. The remaining error
comes from constants the official model builds in float32 whatever the model's dtype
(the sin/cos position embedding and the anchors), where Jittor's float32 sin/cos/log
differ from torch's by an ulp or two.
"""
import numpy as np
import pytest

from parity.run import build_pair, make_batch

CONFIG = "configs/rtdetr/rtdetr_r18vd_6x_coco.yml"
# The targets: gradients within 1e-4 relative per tensor (norm-wise), losses 1e-5 relative.
GRADIENT_REL = 1e-4
LOSS_REL = 1e-5


def gradient_errors(ref_cap, jt_cap, floors):
    """``{name: ||ref - jt|| / ||ref||}`` for gradients the input actually decides: a
    gradient that is zero in exact arithmetic (a bias followed by a train-mode norm that
    removes it) holds only cancellation noise, and its reference moves by as much as its
    own size under a one-ulp input change; those are judged by the floor rule alone."""
    jt_by = jt_cap.by_name()
    errors = {}
    for rec in ref_cap.records:
        if not rec.name.startswith("grad:") or rec.kind == "no-gradient":
            continue
        ref = rec.value.astype(np.float64)
        norm = np.linalg.norm(ref)
        if norm == 0 or floors.get(rec.name, 0.0) > 1e-3 * np.abs(ref).max():
            continue
        errors[rec.name] = float(np.linalg.norm(ref - jt_by[rec.name].value.astype(np.float64)) / norm)
    return errors


def loss_errors(ref_cap, jt_cap):
    jt_by = jt_cap.by_name()
    return {r.name: abs(float(r.value) - float(jt_by[r.name].value.reshape(()))) / max(abs(float(r.value)), 1e-300)
            for r in ref_cap.records if r.name.startswith("loss:")}


def run_float64(size, batch, gt_counts):
    from parity.run import noise_floors, run_train_forward
    pair = build_pair(CONFIG, dtype="float64")
    images, targets = pair.cast_inputs(*make_batch(seed=0, batch=batch, size=size, num_classes=80,
                                                   gt_counts=gt_counts))
    ref_cap, jt_cap, floor_caps = run_train_forward(pair, images, targets, measure_floor=True)
    return ref_cap, jt_cap, noise_floors(ref_cap, floor_caps)


@pytest.mark.parity
def test_float64_training_gradients_losses_and_matching_meet_targets():
    from parity.run import judge_captures
    from parity.tolerances import load_registry
    ref_cap, jt_cap, floors = run_float64(size=128, batch=2, gt_counts=[3, 5])
    results = judge_captures(ref_cap, jt_cap, load_registry(), floors)
    failed = [f"{r.name}: {r.note}" for r in results if not r.passed]
    assert not failed, failed[:10]  # includes every gradient and the unforced matcher assignment
    grads = gradient_errors(ref_cap, jt_cap, floors)
    assert len(grads) > 300
    worst = max(grads, key=grads.get)
    print(f"float64 128px: {len(grads)} gradients, worst norm-wise relative {grads[worst]:.2e} ({worst})")
    assert grads[worst] <= GRADIENT_REL, (worst, grads[worst])
    losses = loss_errors(ref_cap, jt_cap)
    assert len(losses) == 22 and max(losses.values()) <= LOSS_REL, max(losses.items(), key=lambda kv: kv[1])


@pytest.mark.slow
@pytest.mark.parity
def test_float64_training_gradients_at_640():
    """The issue's gradient target at its size: r18vd, 640x640, denoising on (batch 1:
    the float64 capture of both frameworks at 640 takes 15.5 GB at batch 1)."""
    ref_cap, jt_cap, floors = run_float64(size=640, batch=1, gt_counts=[3])
    grads = gradient_errors(ref_cap, jt_cap, floors)
    worst = max(grads, key=grads.get)
    print(f"float64 640px: {len(grads)} gradients, worst norm-wise relative {grads[worst]:.2e} ({worst})")
    assert grads[worst] <= GRADIENT_REL, (worst, grads[worst])
    losses = loss_errors(ref_cap, jt_cap)
    assert max(losses.values()) <= LOSS_REL, max(losses.items(), key=lambda kv: kv[1])
