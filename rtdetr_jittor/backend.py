"""The Jittor twin's framework glue for framework-neutral code: the one interface the
harness (``parity``) and other framework-neutral drivers call, so that they never branch
on the framework. ``reference_pytorch.backend`` is its twin: same names, same meanings.

Data-parallel glue (``init_world``, ``sync_batch_norm``, ``broadcast_state``,
``average_gradients``, ``all_reduce_sum``) comes from the twin's ``distributed``.

Values cross the interface as NumPy arrays: ``to_numpy`` copies a Var out,
``from_numpy`` copies an array in with its dtype kept (``jt.array`` alone would turn
float64 into float32).
"""
import numpy as np

from rtdetr_jittor._env import jt

from . import build  # noqa: F401  (part of the interface: build(config, overrides))
from .checkpoint import (load_model_state, load_training_checkpoint, model_state_numpy,  # noqa: F401
                         read_weights, save_training_checkpoint)
from . import compat
from .distributed import (all_reduce_sum, average_gradients, broadcast_state, init_world,  # noqa: F401
                          sync_batch_norm)
from .optim.ema import ModelEMA  # noqa: F401
from .optim.optim import build_optimizer, optimizer_update  # noqa: F401

NAME = "jittor"


def to_numpy(value):
    """A NumPy copy of a Var, array or Python number; None for anything else."""
    if isinstance(value, jt.Var):
        return value.numpy().copy()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (int, float, bool, np.number)):
        return np.asarray(value)
    return None


def from_numpy(array):
    """A Var holding a copy of ``array``, same dtype; data, so no gradient flows into it
    (as into ``torch.from_numpy``'s tensor): the first convolution skips its input gradient."""
    array = np.array(array, copy=True)
    return (jt.array(array, dtype=str(array.dtype)) if array.dtype.kind == "f" else jt.array(array)).stop_grad()


def targets_from_numpy(targets):
    """Per-image target dicts of arrays as dicts of Vars."""
    return [{k: from_numpy(v) for k, v in t.items()} for t in targets]


def no_grad():
    return jt.no_grad()


def set_mode(model, training):
    """Train or eval mode; returns the model."""
    model.train() if training else model.eval()
    return model


def to_float64(model):
    model.float64()
    return model


def add_forward_hook(module, hook):
    """Call ``hook(module, inputs, output)`` after each forward; returns the remover
    (a Jittor module holds one forward hook)."""
    module.register_forward_hook(hook)
    return module.remove_forward_hook


def named_gradients(loss, model):
    """``[(name, array or None)]`` of d loss / d parameter for every trainable parameter,
    None where the parameter is not reached by the graph (Jittor returns zeros there;
    torch's "grad is None" is "no op consumes it")."""
    named = compat.trainable_named_parameters(model)
    used = [compat.has_consumers(p) for _, p in named]
    grads = jt.grad(loss, [p for _, p in named])
    return [(n, g.numpy().copy() if u else None) for (n, _), g, u in zip(named, grads, used)]


def optimizer_state_numpy(optimizer):
    """AdamW's state and parameter groups keyed by parameter name, as NumPy arrays."""
    return optimizer.state_dict()


def sync():
    """Wait for pending computation."""
    jt.sync_all()


def manual_seed(seed):
    """Seed the framework's global generator (initial weights, dropout)."""
    jt.set_global_seed(seed)


def materialize(model):
    """Compute the initial weights now: Jittor draws them when they are first computed,
    which must happen under the seed the caller just set."""
    jt.sync(list(model.state_dict().values()))


def release_memory():
    """Hand Jittor's cached memory back between epochs."""
    jt.gc()
