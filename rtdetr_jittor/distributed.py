"""Data-parallel glue for the Jittor twin: Jittor's MPI ops under ``mpirun``.

``mpirun -np N python -m rtdetr_jittor.tools.train ...`` starts N processes; Jittor
sees ``OMPI_COMM_WORLD_SIZE`` on import, compiles its MPI ops with ``mpicc`` (once,
cached) and sets ``jt.in_mpi``, ``jt.rank`` and ``jt.world_size``. The project's own
AdamW and BatchNorm do not use Jittor's MPI hooks (``jt.optim.Optimizer`` averages
gradients itself, ``nn.BatchNorm(sync=True)`` averages per-rank means), so the same
steps as the reference's are done here:

- ``broadcast_state``: rank 0's weights and buffers on every rank (``Var.mpi_broadcast``);
- ``average_gradients``: every gradient averaged over the ranks in one all-reduce,
  after backward and before clipping; a parameter no rank reached keeps none;
- ``sync_batch_norm``: every ``compat.BatchNorm2d`` replaced by ``SyncBatchNorm2d``,
  whose training statistics are moments all-reduced over the ranks in one
  ``Var.mpi_all_reduce`` (whose gradient all-reduces the incoming gradient);
- ``all_reduce_sum``: a NumPy array summed over the ranks; ``is_dist_available_and_initialized``
  and ``get_world_size`` serve the criterion's ``num_boxes`` average.

Jittor's ``mpi_all_reduce`` maps int64 to ``MPI_DOUBLE_INT`` (a pair type,
``extern/mpi/ops/mpi_all_reduce_op.cc``, 1.3.11), so integers travel as int32 and
counts as float64. ``reference_pytorch.distributed`` is its twin (torch.distributed).
"""
import os

import numpy as np

from rtdetr_jittor._env import jt
from jittor import nn
from rtdetr_common.distributed import SINGLE, World
from rtdetr_jittor.compat import BatchNorm2d, constant


def init_world():
    """This process's ``World`` under ``mpirun``; ``SINGLE`` otherwise (or with one process)."""
    if not jt.in_mpi and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("started by torchrun: the Jittor twin runs data-parallel under mpirun "
                           "(mpirun -np N python -m rtdetr_jittor.tools.train ...)")
    if not is_dist_available_and_initialized():
        return SINGLE
    return World(int(jt.rank), int(jt.world_size))


def is_dist_available_and_initialized():
    return bool(jt.in_mpi) and int(jt.world_size) > 1


def get_world_size():
    return int(jt.world_size) if is_dist_available_and_initialized() else 1


def all_reduce_sum(array):
    """``array`` (NumPy float32, float64 or int32) summed over the ranks, same dtype."""
    array = np.array(array, copy=True)
    if array.dtype not in (np.float32, np.float64, np.int32):
        raise TypeError(f"all_reduce_sum takes float32, float64 or int32 arrays, not {array.dtype}")
    if not is_dist_available_and_initialized():
        return array
    return jt.array(array, dtype=str(array.dtype)).mpi_all_reduce("add").numpy()


class SyncBatchNorm2d(BatchNorm2d):
    """``compat.BatchNorm2d`` whose training statistics cover the whole global batch: per
    channel the sum and the sum of squares of the input in float64, and the element
    count, in one all-reduce (float64 keeps E[x^2] - E[x]^2 exact to ~1e-16 of E[x^2],
    far below float32 rounding); its backward is one all-reduce too. Same state_dict;
    eval mode uses the running statistics and no collective."""

    def execute(self, x):
        if not self.is_training():
            return super().execute(x)
        dims = (0, 2, 3)
        x64 = x.float64()
        count = constant(x.numel() // x.shape[1], "float64")
        moments = jt.concat([x64.sum(dims=dims), (x64 * x64).sum(dims=dims), count]).mpi_all_reduce("add")
        channels = x.shape[1]
        n = moments[-1:].detach()
        mean64 = moments[:channels] / n
        var64 = moments[channels:2 * channels] / n - mean64 * mean64
        mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
        out = (x - mean.reshape(1, -1, 1, 1)) * (1.0 / jt.sqrt(var + self.eps)).reshape(1, -1, 1, 1)
        out = out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        unbiased = var * (n / jt.maximum(n - 1, constant(1, "float64"))).astype(x.dtype)
        m, keep = constant(self.momentum, x.dtype), constant(1 - self.momentum, x.dtype)
        self.running_mean.update((self.running_mean * keep + mean.detach() * m).detach())
        self.running_var.update((self.running_var * keep + unbiased.detach() * m).detach())
        self.num_batches_tracked.update((self.num_batches_tracked + 1).detach())
        return out


def sync_batch_norm(module):
    """Replace every ``compat.BatchNorm2d`` in ``module`` by a ``SyncBatchNorm2d`` holding
    the same values; returns ``module``."""
    for name, child in module.named_children():
        if type(child) is BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum)
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                getattr(synced, key).update(getattr(child, key).detach())
            if child.weight.dtype != synced.weight.dtype:
                synced.float64()
            if not child.is_training():
                synced.eval()
            if isinstance(module, nn.Sequential):
                module.add_module(name, synced)  # Sequential keeps children in ``layers``
            else:
                setattr(module, name, synced)
        else:
            sync_batch_norm(child)
    return module


def broadcast_state(module):
    """Rank 0's parameters and buffers on every rank."""
    if not is_dist_available_and_initialized():
        return
    values = list(module.state_dict().values())
    for value in values:
        value.update(value.mpi_broadcast(0).detach())
    jt.sync(values)


def average_gradients(optimizer):
    """Every trainable parameter's gradient averaged over the ranks (one all-reduce of all
    gradients and of a reached-flag per parameter); a parameter no rank reached keeps
    None, one some rank reached gets the average with zeros elsewhere."""
    if not is_dist_available_and_initialized():
        return
    names = [n for g in optimizer.param_groups for n in g["names"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grads = [optimizer.grads.get(n) for n in names]
    reached = all_reduce_sum(np.array([g is not None for g in grads], np.float64))
    flat = jt.concat([(g if g is not None else jt.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
    flat = flat.mpi_all_reduce("add") / constant(get_world_size(), flat.dtype)
    offset = 0
    for name, p, anywhere in zip(names, params, reached):
        size = p.numel()
        optimizer.grads[name] = flat[offset:offset + size].reshape(p.shape).detach() if anywhere else None
        offset += size
    jt.sync([g for g in optimizer.grads.values() if g is not None])
