"""Model weights and training checkpoints for the Jittor twin.

Model weights are read by ``rtdetr_convert.read_state_dict`` (official ``.pth`` layouts,
``ema.module`` preferred, ``model`` or a bare state_dict; Jittor ``jt.save`` files;
this project's framework-neutral checkpoints; HuggingFace ``model.safetensors``);
missing, unexpected and mis-shaped keys fail unless ``strict=False``. Training
checkpoints (``rtdetr_common.checkpoint_io``) hold NumPy arrays only, keyed by
parameter name and in torch conventions (``num_batches_tracked`` int64, 0-d), so the
reference can resume them.
"""
import random

import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common.checkpoint_io import (CheckpointError, check_optimizer_state,  # noqa: F401
                                         read_checkpoint, write_checkpoint)
from rtdetr_convert import read_state_dict
from rtdetr_jittor.compat import StateDictError, describe_state_dict_problems, load_state_dict_checked  # noqa: F401


def model_state_numpy(model):
    """The model's state_dict as NumPy arrays in torch conventions."""
    out = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        if k.endswith("num_batches_tracked"):
            a = np.asarray(a.reshape(()), dtype=np.int64)
        out[k] = a
    return out


def read_weights(path):
    """Model state_dict (official names, NumPy arrays) from any weights file
    ``rtdetr_convert.read_state_dict`` reads: official ``.pth``, our checkpoint, a Jittor
    file or a HuggingFace ``model.safetensors``."""
    return read_state_dict(path)[0]


def load_model_state(model, state, strict=True, check_only=False):
    """Load ``state`` (arrays, Vars or tensors); report and, if ``strict``, fail on any
    mismatch (before loading anything). ``check_only``: report/fail, load nothing."""
    if not check_only:
        problems = load_state_dict_checked(model, state, strict=strict)
        # materialise now: a loaded value left as a pending jt.array op is fused into the
        # next step's kernels, which then round differently (weights off by 3e-6 after a step)
        jt.sync(list(model.state_dict().values()))
        return problems
    own = model.state_dict()
    problems = {"missing": [k for k in own if k not in state],
                "unexpected": [k for k in state if k not in own],
                "mismatched": [(k, tuple(v.shape), tuple(np.shape(state[k]))) for k, v in own.items()
                               if k in state and not _fits(v.shape, np.shape(state[k]))]}
    if strict and any(problems.values()):
        raise StateDictError(describe_state_dict_problems(problems))
    return problems


def _fits(want, got):
    """Shapes agree, or a shape-[1] Var meets torch's 0-d form of it."""
    return tuple(want) == tuple(got) or (tuple(want) == (1,) and tuple(got) == ())


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
    """Restore a checkpoint (ours, from either framework) into the given objects.
    Everything is checked before anything is changed: a checkpoint of another
    architecture raises ``CheckpointError`` naming keys, and nothing is loaded."""
    ckpt = read_checkpoint(path)
    try:
        load_model_state(model, ckpt["model"], strict=True, check_only=True)
        if ema is not None and ckpt.get("ema"):
            load_model_state(ema.module, ckpt["ema"]["module"], strict=True, check_only=True)
    except StateDictError as e:
        raise CheckpointError(f"{path} does not fit this model (another architecture or config?): {e}") from e
    if optimizer is not None and ckpt.get("optimizer"):
        check_optimizer_state(optimizer.param_groups, ckpt["optimizer"])
    load_model_state(model, ckpt["model"], strict=True)
    if ema is not None and ckpt.get("ema"):
        load_model_state(ema.module, ckpt["ema"]["module"], strict=True)
        ema.updates = int(ckpt["ema"]["updates"])
    if optimizer is not None and ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    jt.sync_all()  # nothing pending: the resumed run computes exactly as the uninterrupted one
    if lr_schedule is not None and ckpt.get("lr_schedule"):
        lr_schedule.load_state_dict(ckpt["lr_schedule"])
    rng = ckpt.get("rng") or {}
    if "numpy" in rng:
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return ckpt
