"""What every benchmark process runs on: model configs, overrides and inputs.

Both frameworks get the same config (multi-scale training off so every step has the
input size asked for, EMA off, no pretrained download), the same NumPy images and
the same targets, all derived from fixed seeds.
"""
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "r18vd": "configs/rtdetr/rtdetr_r18vd_6x_coco.yml",
    "r34vd": "configs/rtdetr/rtdetr_r34vd_6x_coco.yml",
    "r50vd": "configs/rtdetr/rtdetr_r50vd_6x_coco.yml",
    "r101vd": "configs/rtdetr/rtdetr_r101vd_6x_coco.yml",
}


def config_path(model):
    """The YAML config of a model alias (or a path to a config, returned as is)."""
    path = MODELS.get(model, model)
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def model_tag(model):
    """A file-name-safe short name: the alias, or the config file's name without extension."""
    if model in MODELS:
        return model
    name = os.path.splitext(os.path.basename(model))[0]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def overrides(size):
    """Config overrides for a fixed ``size`` x ``size`` input in eval and training."""
    return {
        "RTDETR": {"multi_scale": None},
        "PResNet": {"pretrained": False},
        "HybridEncoder": {"eval_spatial_size": [size, size]},
        "RTDETRTransformer": {"eval_spatial_size": [size, size]},
        "use_ema": False,
    }


def images(batch, size, seed=0):
    """(batch, 3, size, size) float32 in [0, 1)."""
    return np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)


def targets(batch, num_classes, seed=1):
    """Per image 3, 5, 7... boxes (normalised cxcywh) with labels below ``num_classes``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batch):
        n = 3 + 2 * i
        centres = rng.uniform(0.25, 0.75, size=(n, 2))
        sizes = rng.uniform(0.05, 0.4, size=(n, 2))
        out.append({"labels": rng.integers(0, num_classes, size=n, dtype=np.int64),
                    "boxes": np.concatenate([centres, sizes], 1).astype(np.float32)})
    return out
