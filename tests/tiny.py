"""Tiny models and data for tests that run whole training or inference loops.

``TINY_OVERRIDES`` make the synthetic r18vd config tiny (64x64 inputs, hidden width 64,
one decoder layer, 8 queries); ``make_tiny_coco`` writes a 4-image train / 2-image val
COCO root of 64x64 synthetic shapes (2 steps per epoch at batch size 2).
"""
import os
import sys
from argparse import Namespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "synthetic", "rtdetr_r18vd_synthetic.yml")
SIZE, WIDTH = 64, 64
TINY_OVERRIDES = {
    "HybridEncoder": {"eval_spatial_size": [SIZE, SIZE], "hidden_dim": WIDTH, "dim_feedforward": 128},
    "RTDETRTransformer": {"eval_spatial_size": [SIZE, SIZE], "hidden_dim": WIDTH, "feat_channels": [WIDTH] * 3,
                          "num_decoder_layers": 1, "dim_feedforward": 128, "num_queries": 8, "num_denoising": 4},
    "RTDETRPostProcessor": {"num_top_queries": 8},
}


def engine_class(framework):
    if framework == "pytorch":
        from reference_pytorch.engine import Engine
    else:
        from rtdetr_jittor.engine import Engine
    return Engine


def make_tiny_coco(root):
    """Write the tiny COCO root under ``root``; return ``root``."""
    sys.path.insert(0, os.path.join(ROOT, "fixtures"))
    try:
        from make_synthetic_coco import generate
    finally:
        sys.path.pop(0)
    generate(str(root), num_train=4, num_val=2, size=SIZE, seed=0)
    return str(root)


def train_args(data, out, epochs, resume=None):
    """Arguments of ``rtdetr_common.loops.train``: batch 2, no evaluation, no progress bars."""
    return Namespace(data=data, output_dir=out, epochs=epochs, max_steps=None, batch_size=2, input_size=SIZE,
                     resume=resume, seed=0, eval_every=1, no_eval=True, target_ap50=None, progress=False)
