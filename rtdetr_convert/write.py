"""Write model weights (official names, NumPy) for a target: torch, Jittor or HuggingFace.

- ``"torch"``: ``torch.save({'model': state})`` with tensors only, so that
  ``torch.load(weights_only=True)`` reads it and ``reference_pytorch`` loads it with
  ``strict=True`` (``num_batches_tracked`` int64, 0-d, as torch stores it);
- ``"jittor"``: ``jt.save({'model': state})`` (NumPy arrays, ``num_batches_tracked`` of
  shape [1] as the Jittor twin stores it); the name must not end in ``.pth``, ``.pt``
  or ``.bin``, for which ``jt.save`` writes torch's format instead;
- ``"hf"``: a ``model.safetensors`` of ``RTDetrForObjectDetection`` in the layout
  ``save_pretrained`` writes (``rtdetr_convert.hf``), with the ``{"format": "pt"}``
  metadata transformers expects; the name must end in ``.safetensors``.

Every file is written atomically: a crash leaves no partial file behind.
"""
import os
import tempfile

import numpy as np

from rtdetr_common.files import write_atomic, write_text_atomic

from .read import as_numpy, is_counter

TARGETS = ("jittor", "torch", "hf")


def torch_conventions(state):
    """NumPy state with ``num_batches_tracked`` as torch stores it: int64, 0-d."""
    return {k: (np.asarray(as_numpy(v), dtype=np.int64).reshape(()) if is_counter(k) else as_numpy(v))
            for k, v in state.items()}


def jittor_conventions(state):
    """NumPy state with ``num_batches_tracked`` as the Jittor twin stores it: shape [1], int64."""
    return {k: (np.asarray(as_numpy(v), dtype=np.int64).reshape(1) if is_counter(k) else as_numpy(v))
            for k, v in state.items()}


def check_name(path, to):
    """Refuse a destination name the target's writer would misread (``ValueError``)."""
    if to == "jittor" and path.endswith((".pth", ".pt", ".bin")):
        raise ValueError(f"{path}: jt.save writes torch's format for .pth/.pt/.bin names; "
                         "give the Jittor file another suffix (e.g. .pkl)")
    if to == "hf" and not path.endswith(".safetensors"):
        raise ValueError(f"{path}: a HuggingFace weights file is named *.safetensors "
                         "(model.safetensors for from_pretrained)")


def write_torch(state, path):
    import torch
    # np.array, not np.ascontiguousarray: the latter turns 0-d counters into shape [1]
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in torch_conventions(state).items()}
    write_atomic(path, lambda f: torch.save({"model": tensors}, f), binary=True)


def write_jittor(state, path):
    from rtdetr_jittor._env import jt
    check_name(path, "jittor")
    with tempfile.TemporaryDirectory() as tmp:  # jt.save takes a path, not a file handle
        staged = os.path.join(tmp, "weights.pkl")
        jt.save({"model": jittor_conventions(state)}, staged)
        with open(staged, "rb") as f:
            data = f.read()
    write_atomic(path, lambda f: f.write(data), binary=True)


def hf_file_tensors(state):
    """``{HuggingFace file-layout name: contiguous array}`` of an official state."""
    from .hf import official_to_hf
    return {k: np.ascontiguousarray(v) if np.ndim(v) else np.array(v)
            for k, v in official_to_hf(torch_conventions(state), "file").items()}


def write_hf(state, path, config=None):
    """``model.safetensors`` at ``path``; with ``config`` (a ``transformers.RTDetrConfig``)
    also ``config.json`` beside it, so the folder loads with ``from_pretrained``."""
    from safetensors.numpy import save
    check_name(path, "hf")
    data = save(hf_file_tensors(state), metadata={"format": "pt"})
    write_atomic(path, lambda f: f.write(data), binary=True)
    if config is not None:
        write_text_atomic(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json"),
                          config.to_json_string())


def write_state(state, path, to, config=None):
    """Write ``state`` for target ``to``; return the state as written (NumPy, official names)."""
    if to == "jittor":
        write_jittor(state, path)
        return jittor_conventions(state)
    if to == "torch":
        write_torch(state, path)
        return torch_conventions(state)
    if to == "hf":
        write_hf(state, path, config)
        return torch_conventions(state)
    raise ValueError(f"unknown target {to!r}; one of {TARGETS}")
