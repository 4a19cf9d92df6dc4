"""Which Vars are trained: state_dict buffers that never are (``make_buffer``),
parameters frozen for good (``freeze``), the trainable ones (``trainable_named_parameters``)
and whether the live graph reaches a parameter (``has_consumers``). Jittor trains every
public Var attribute and has no ``requires_grad``; these give torch's roles."""
import re

import numpy as np

from rtdetr_jittor._env import jt


def make_buffer(value, dtype=None):
    """A Var that is stored in the state_dict but never receives a gradient."""
    if isinstance(value, jt.Var):
        var = value.detach()
    else:
        arr = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        # jt.array wraps int64 to int32 (and float64 to float32): integers and an explicit dtype are kept
        var = jt.array(arr, dtype=str(arr.dtype)) if dtype or arr.dtype.kind in "iu" else jt.array(arr)
    return var.stop_grad()


def freeze(module_or_var):
    """Freeze parameters for good. Call before the model's first ``eval()`` (Jittor's
    ``train()`` restores gradient flags from a snapshot taken at the first ``eval()``)."""
    params = [module_or_var] if isinstance(module_or_var, jt.Var) else module_or_var.parameters()
    for p in params:
        p.stop_grad()


def trainable_named_parameters(module):
    """``(name, Var)`` of parameters that receive gradients (module must be in train mode)."""
    return [(n, p) for n, p in module.named_parameters() if not p.is_stop_grad()]


_CONSUMERS = re.compile(r":o(\d+):")


def has_consumers(var):
    """Whether an op in the live graph takes ``var`` as input: torch's ``grad is None``
    for a parameter the loss does not reach (``jt.grad`` returns zeros there, and an
    all-zero gradient is not the same thing). Call before ``jt.grad`` frees the graph.
    Jittor has no accessor for a Var's consumers; ``Var.debug_msg()`` prints their number
    as ``:o<N>`` (``jittor/src/var.cc``, 1.3.11)."""
    match = _CONSUMERS.search(var.debug_msg())
    if match is None:
        raise RuntimeError(f"unexpected Var.debug_msg() format: {var.debug_msg()!r}")
    return int(match.group(1)) > 0
