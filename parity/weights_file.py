"""Reading a weights file for ``python -m parity compare --weights``.

``read_state_dict(path)`` is the one call the harness makes. This is a stand-in for
``rtdetr_convert.read_state_dict`` (same signature, same return value): it reads what
``reference_pytorch.checkpoint.read_weights`` reads (official ``.pth`` layouts:
``ema.module``, ``model`` or a bare state_dict; this project's checkpoints and bare
state_dicts; Jittor files written by ``rtdetr_jittor.convert``).
"""
import os
import zipfile

import numpy as np

from rtdetr_common.checkpoint_io import CheckpointError


def read_state_dict(path):
    """``(state, format_name)``: NumPy arrays keyed by official state_dict names, and
    what kind of file held them. A missing or unreadable file raises ``CheckpointError``."""
    from reference_pytorch.checkpoint import read_weights
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    state = read_weights(path)
    arrays = {name: value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
              for name, value in state.items()}
    return arrays, "torch .pth" if zipfile.is_zipfile(path) else "pickle (project checkpoint or state_dict)"
