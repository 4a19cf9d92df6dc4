"""The reference's framework glue for framework-neutral code: the one interface the
harness (``parity``) and other framework-neutral drivers call, so that they never branch
on the framework. ``rtdetr_jittor.backend`` is its twin: same names, same meanings.

Data-parallel glue (``init_world``, ``sync_batch_norm``, ``broadcast_state``,
``average_gradients``, ``all_reduce_sum``) comes from the twin's ``distributed``.

Values cross the interface as NumPy arrays: ``to_numpy`` copies a tensor out,
``from_numpy`` copies an array in with its dtype kept (float64 stays float64, int64
stays int64).
"""
import numpy as np
import torch

from . import build  # noqa: F401  (part of the interface: build(config, overrides))
from .checkpoint import (load_model_state, load_training_checkpoint, model_state_numpy,  # noqa: F401
                         optimizer_state_numpy, read_weights, save_training_checkpoint)
from .distributed import (all_reduce_sum, average_gradients, broadcast_state, init_world,  # noqa: F401
                          sync_batch_norm)
from .optim.ema import ModelEMA  # noqa: F401
from .optim.optim import build_optimizer, optimizer_update  # noqa: F401

NAME = "pytorch"


def to_numpy(value):
    """A NumPy copy of a tensor, array or Python number; None for anything else."""
    if torch.is_tensor(value):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (int, float, bool, np.number)):
        return np.asarray(value)
    return None


def from_numpy(array):
    """A tensor holding a copy of ``array``, same dtype."""
    return torch.from_numpy(np.array(array, copy=True))


def targets_from_numpy(targets):
    """Per-image target dicts of arrays as dicts of tensors."""
    return [{k: from_numpy(v) for k, v in t.items()} for t in targets]


def no_grad():
    return torch.no_grad()


def set_mode(model, training):
    """Train or eval mode; returns the model."""
    return model.train(training)


def to_float64(model):
    model.double()
    return model


def add_forward_hook(module, hook):
    """Call ``hook(module, inputs, output)`` after each forward; returns the remover."""
    return module.register_forward_hook(hook).remove


def named_gradients(loss, model):
    """``[(name, array or None)]`` of d loss / d parameter for every trainable parameter,
    None where the parameter is not reached by the graph."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [(n, None if p.grad is None else p.grad.numpy().copy())
            for n, p in model.named_parameters() if p.requires_grad]


def sync():
    """Wait for pending computation (eager on CPU: nothing to wait for)."""


def manual_seed(seed):
    """Seed the framework's global generator (initial weights, dropout)."""
    torch.manual_seed(seed)


def materialize(model):
    """Compute whatever the model's construction left pending (eager: nothing)."""


def release_memory():
    """Hand cached memory back between epochs (torch's CPU allocator keeps nothing)."""
