"""Model weights and training checkpoints for the Jittor twin.

Model weights load from official layouts (``ema.module`` preferred, ``model``, or a
bare state_dict) in ``.pth`` files or from this project's framework-neutral
checkpoints; missing, unexpected and mis-shaped keys fail unless ``strict=False``.
Training checkpoints (``rtdetr_common.checkpoint_io``) hold NumPy arrays only, keyed
by parameter name and in torch conventions (``num_batches_tracked`` int64, 0-d), so
the reference can resume them.
"""
import random
import zipfile

import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common.checkpoint_io import CheckpointError, read_checkpoint, write_checkpoint, FORMAT
from rtdetr_jittor.compat import StateDictError, load_state_dict_checked  # noqa: F401  (re-exported)


def model_state_numpy(model):
    """The model's state_dict as NumPy arrays in torch conventions."""
    out = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        if k.endswith("num_batches_tracked"):
            a = np.asarray(a.reshape(()), dtype=np.int64)
        out[k] = a
    return out


def extract_model_state(obj):
    """The model state_dict inside an official checkpoint object or one of ours."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("ema"), dict) and "module" in obj["ema"]:
        return obj["ema"]["module"]
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    raise CheckpointError("no model weights found: expected ['ema']['module'], ['model'] or a bare state_dict")


def read_weights(path):
    """Model state_dict from an official ``.pth`` (torch zip format) or one of our checkpoints."""
    try:
        return extract_model_state(read_checkpoint(path))
    except CheckpointError as ours:
        if not zipfile.is_zipfile(path):
            raise
        try:
            obj = jt.load(path)
        except Exception as e:
            raise CheckpointError(f"cannot read weights from {path}: {ours}; as torch file: {e}") from e
        return extract_model_state(obj)


def load_model_state(model, state, strict=True):
    """Load ``state`` (arrays, Vars or tensors); report and, if ``strict``, fail on any mismatch."""
    return load_state_dict_checked(model, state, strict=strict)


def save_training_checkpoint(path, model, optimizer=None, ema=None, lr_schedule=None, epoch=0, step=0, extra=None):
    """Atomically write everything needed to resume, as NumPy arrays."""
    payload = {
        "framework": "jittor",
        "model": model_state_numpy(model),
        "ema": ({"module": model_state_numpy(ema.module), "updates": ema.updates} if ema else None),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "lr_schedule": lr_schedule.state_dict() if lr_schedule else None,
        "epoch": epoch, "step": step,
        "rng": {"numpy": np.random.get_state(), "python": random.getstate(), "framework": None},
        "extra": extra or {},
    }
    write_checkpoint(path, payload)


def load_training_checkpoint(path, model, optimizer=None, ema=None, lr_schedule=None):
    """Restore a checkpoint (ours, from either framework) into the given objects."""
    ckpt = read_checkpoint(path)
    load_model_state(model, ckpt["model"], strict=True)
    if ema is not None and ckpt.get("ema"):
        load_model_state(ema.module, ckpt["ema"]["module"], strict=True)
        ema.updates = int(ckpt["ema"]["updates"])
    if optimizer is not None and ckpt.get("optimizer"):
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    if lr_schedule is not None and ckpt.get("lr_schedule"):
        lr_schedule.load_state_dict(ckpt["lr_schedule"])
    rng = ckpt.get("rng") or {}
    if "numpy" in rng:
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return ckpt
