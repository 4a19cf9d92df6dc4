"""Read model weights from any supported file: ``read_state_dict(path)``.

Formats, told apart by their content (never by the file name):

- ``"torch"``: a torch zip file (``.pth``) holding an official checkpoint
  (``['ema']['module']`` preferred, then ``['model']``) or a bare state_dict; read with
  ``torch.load(weights_only=True)``, or Jittor's torch-free reader when torch is absent;
- ``"checkpoint"``: this project's framework-neutral training checkpoint (either twin);
- ``"jittor"``: a ``jt.save`` file (a pickle of NumPy arrays plus Jittor's checksum);
- ``"huggingface"``: a ``model.safetensors`` of ``RTDetrForObjectDetection`` (names
  mapped to the official ones by ``rtdetr_convert.hf``; safetensors keeps its keys
  sorted, not in module order).

Values come back as NumPy arrays under official ``rtdetr_pytorch`` names, with
``num_batches_tracked`` as torch stores it (int64, 0-d). An unreadable file raises
``CheckpointError`` (a HuggingFace file whose names do not map: ``StateDictError``)
with a one-line message naming the file.
"""
import os
import zipfile

import numpy as np

from rtdetr_common.checkpoint_io import FORMAT, CheckpointError, StateDictError, extract_model_state, load_pickle
from rtdetr_common.errors import reason

from .hf import hf_to_official

FORMATS = ("torch", "checkpoint", "jittor", "huggingface")
SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def as_numpy(value):
    """A torch tensor, Jittor Var or array-like as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def is_counter(name):
    return name.rsplit(".", 1)[-1] == "num_batches_tracked"


def official_conventions(state):
    """NumPy arrays; ``num_batches_tracked`` int64 and 0-d, as torch stores it. A value
    that is not a numeric array raises ``CheckpointError`` naming its key."""
    out = {}
    for name, value in state.items():
        try:
            array = as_numpy(value)
        except Exception as e:
            raise CheckpointError(f"{name} is not an array ({reason(e)})") from e
        if array.dtype.kind not in "biuf":
            raise CheckpointError(f"{name} holds {array.dtype} values, not numbers")
        out[name] = array.astype(np.int64).reshape(()) if is_counter(name) and array.size == 1 else array
    return out


def is_safetensors(path):
    """A safetensors file starts with the little-endian length of a JSON header that fits."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return size <= min(SAFETENSORS_HEADER_LIMIT, os.path.getsize(path) - 8)


def _read_safetensors(path):
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as e:  # SafetensorError, or a header that is not what it claims
        raise CheckpointError(f"cannot read safetensors file {path} (truncated or corrupt?): {reason(e)}") from e


def _read_torch_zip(path):
    try:
        import torch
    except ImportError:
        torch = None
    try:
        if torch is not None:
            return torch.load(path, map_location="cpu", weights_only=True)
        import rtdetr_jittor._env  # noqa: F401  (Jittor set up offline before its utilities load)
        from jittor_utils.load_pytorch import load_pytorch  # torch's zip format without torch
        return load_pytorch(path)
    except ImportError as e:
        raise CheckpointError(f"reading the torch file {path} needs torch or jittor installed") from e
    except Exception as e:
        raise CheckpointError(f"cannot read torch file {path} (truncated or corrupt?): {reason(e)}") from e


def read_state_dict(path):
    """``(state, format)``: the model weights in ``path`` as ``{official name: numpy array}``
    and which of ``FORMATS`` the file is."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    if is_safetensors(path):
        tensors, fmt = _read_safetensors(path), "huggingface"
        try:
            state = hf_to_official(tensors)
        except StateDictError as e:
            raise StateDictError(f"{path}: {e}") from e
        return official_conventions(state), fmt
    if zipfile.is_zipfile(path):
        obj, fmt = _read_torch_zip(path), "torch"
    else:
        obj = load_pickle(path)
        fmt = "checkpoint" if isinstance(obj, dict) and obj.get("format") == FORMAT else "jittor"
    try:
        return official_conventions(extract_model_state(obj)), fmt
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
