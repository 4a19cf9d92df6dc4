"""Model weights and training checkpoints for the reference.

Model weights are read by ``rtdetr_convert.read_state_dict`` (official ``.pth`` layouts,
``ema.module`` preferred, ``model`` or a bare state_dict; Jittor files; this project's
framework-neutral checkpoints; HuggingFace ``model.safetensors``); missing, unexpected
and mis-shaped keys fail unless ``strict=False``.
Training checkpoints (``rtdetr_common.checkpoint_io``) hold NumPy arrays only, keyed
by parameter name, so the Jittor twin can resume them.
"""
import random

import numpy as np
import torch

from rtdetr_common.checkpoint_io import (CheckpointError, StateDictError, check_optimizer_state,  # noqa: F401
                                         read_checkpoint, write_checkpoint)
from rtdetr_convert import read_state_dict


def model_state_numpy(model):
    """The model's state_dict as NumPy arrays (torch conventions: num_batches_tracked int64, 0-d)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def read_weights(path):
    """Model state_dict (official names, NumPy arrays) from any weights file
    ``rtdetr_convert.read_state_dict`` reads: official ``.pth``, our checkpoint, a Jittor
    file or a HuggingFace ``model.safetensors``."""
    return read_state_dict(path)[0]


def _fits(want, got):
    """Shapes agree, or a 0-d buffer meets Jittor's shape-[1] form of it."""
    return tuple(want) == tuple(got) or (tuple(want) == () and tuple(got) == (1,))


def load_model_state(model, state, strict=True, check_only=False):
    """Load ``state`` (tensors or arrays); report and, if ``strict``, fail on any mismatch
    (before loading anything). ``check_only``: report/fail, load nothing."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(own[k].shape), tuple(np.shape(state[k]))) for k in own
                  if k in state and not _fits(own[k].shape, np.shape(state[k]))]
    problems = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        raise StateDictError(
            f"state_dict does not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} mis-shaped "
            f"(e.g. {mismatched[:3]})")
    if check_only:
        return problems
    bad = {m[0] for m in mismatched}
    tensors = {k: _as_tensor(v).to(own[k].dtype).reshape(own[k].shape)
               for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(tensors, strict=False)
    return problems


def _as_tensor(value):
    return value.detach() if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))


def optimizer_state_numpy(optimizer):
    """AdamW's state and parameter groups keyed by parameter name, as NumPy arrays."""
    state = {}
    for group in optimizer.param_groups:
        for name, p in zip(group["names"], group["params"]):
            s = optimizer.state.get(p)
            if s:
                state[name] = {"step": int(s["step"]), "exp_avg": s["exp_avg"].numpy().copy(),
                               "exp_avg_sq": s["exp_avg_sq"].numpy().copy()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"state": state, "param_groups": groups}


def _load_optimizer_state(optimizer, sd):
    check_optimizer_state(optimizer.param_groups, sd)
    for group, saved in zip(optimizer.param_groups, sd["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "names"})
    by_name = {n: p for g in optimizer.param_groups for n, p in zip(g["names"], g["params"])}
    optimizer.state.clear()
    for name, s in sd["state"].items():
        optimizer.state[by_name[name]] = {"step": torch.tensor(float(s["step"])),
                                          "exp_avg": torch.from_numpy(np.array(s["exp_avg"])),
                                          "exp_avg_sq": torch.from_numpy(np.array(s["exp_avg_sq"]))}


def save_training_checkpoint(path, model, optimizer=None, ema=None, lr_schedule=None, epoch=0, step=0, extra=None):
    """Atomically write everything needed to resume, as NumPy arrays."""
    payload = {
        "framework": "pytorch",
        "model": model_state_numpy(model),
        "ema": ({"module": model_state_numpy(ema.module), "updates": ema.updates} if ema else None),
        "optimizer": optimizer_state_numpy(optimizer) if optimizer else None,
        "lr_schedule": lr_schedule.state_dict() if lr_schedule else None,
        "epoch": epoch, "step": step,
        "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
                "framework": torch.get_rng_state().numpy()},
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
        _load_optimizer_state(optimizer, ckpt["optimizer"])
    if lr_schedule is not None and ckpt.get("lr_schedule"):
        lr_schedule.load_state_dict(ckpt["lr_schedule"])
    rng = ckpt.get("rng") or {}
    if "numpy" in rng:
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    if rng.get("framework") is not None and ckpt.get("framework") == "pytorch":
        torch.set_rng_state(torch.from_numpy(np.asarray(rng["framework"])))
    return ckpt
