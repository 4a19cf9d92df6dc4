"""Data-parallel glue for the reference: ``torch.distributed`` under ``torchrun``.

``torchrun --nproc_per_node N -m reference_pytorch.tools.train ...`` starts N processes
with ``RANK``/``WORLD_SIZE`` set; ``init_world`` joins them into a process group (gloo:
the engine keeps the model on the CPU, and NCCL takes CUDA tensors only). What the
official recipe gets from ``DistributedDataParallel`` and ``SyncBatchNorm`` is done
here in plain collectives, because ``torch.nn.SyncBatchNorm`` runs on CUDA only:

- ``broadcast_state``: rank 0's weights and buffers on every rank (DDP does it when it wraps);
- ``average_gradients``: every gradient averaged over the ranks in one all-reduce,
  after backward and before clipping (DDP's averaging); a parameter without a gradient
  on every rank keeps none (DDP's ``find_unused_parameters``);
- ``sync_batch_norm``: every ``BatchNorm2d`` replaced by ``SyncBatchNorm2d``, whose
  training statistics are moments all-reduced over the ranks (one all-reduce) with
  autograd through it (its backward all-reduces the incoming gradient, as
  SyncBatchNorm's does);
- ``all_reduce_sum``: a NumPy array summed over the ranks (``rtdetr_common.distributed``
  builds object exchange on it); ``is_dist_available_and_initialized`` and
  ``get_world_size`` (official names) serve the criterion's ``num_boxes`` average.

``rtdetr_jittor.distributed`` is its twin (MPI under ``mpirun``).
"""
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from rtdetr_common.distributed import SINGLE, World

_BACKEND = "gloo"  # the engine keeps the model on the CPU; NCCL takes CUDA tensors only


def init_world():
    """Join the launcher's process group (once) and return this process's ``World``;
    ``SINGLE`` when not started by a launcher with more than one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        raise RuntimeError("started by mpirun: the reference runs data-parallel under torchrun "
                           "(torchrun --nproc_per_node N -m reference_pytorch.tools.train ...)")
    if size == 1 and not is_dist_available_and_initialized():
        return SINGLE
    if not is_dist_available_and_initialized():
        dist.init_process_group(_BACKEND)
    return World(dist.get_rank(), dist.get_world_size())


def is_dist_available_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_available_and_initialized() else 1


def all_reduce_sum(array):
    """``array`` (NumPy) summed over the ranks, same dtype."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if is_dist_available_and_initialized():
        dist.all_reduce(tensor)
    return tensor.numpy()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the incoming gradient summed over the ranks."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics cover the whole global batch: per channel
    the sum and the sum of squares of the input in float64, and the element count, in
    one all-reduce (float64 keeps E[x^2] - E[x]^2 exact to ~1e-16 of E[x^2], far below
    float32 rounding); its backward is one all-reduce too. Same state_dict as
    ``BatchNorm2d``; eval mode uses the running statistics and no collective."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = (0, 2, 3)
        x64 = x.double()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64)
        moments = _AllReduceSum.apply(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]))
        channels = x.shape[1]
        n = moments[-1].detach()
        mean64 = moments[:channels] / n
        var64 = moments[channels:2 * channels] / n - mean64 * mean64
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
        out = (x - mean.reshape(1, -1, 1, 1)) * torch.rsqrt(var + self.eps).reshape(1, -1, 1, 1)
        out = out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = var * (n / torch.clamp(n - 1, min=1)).to(x.dtype)
            self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
            self.running_var.mul_(1 - factor).add_(unbiased.detach() * factor)
        return out


def sync_batch_norm(module):
    """Replace every ``BatchNorm2d`` in ``module`` by a ``SyncBatchNorm2d`` holding the
    same values (official: ``nn.SyncBatchNorm.convert_sync_batchnorm``); returns ``module``."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum).to(child.weight.dtype)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batch_norm(child)
    return module


def broadcast_state(module):
    """Rank 0's parameters and buffers on every rank."""
    if not is_dist_available_and_initialized():
        return
    with torch.no_grad():
        for value in module.state_dict().values():
            dist.broadcast(value, 0)


def average_gradients(optimizer):
    """Every trainable parameter's gradient averaged over the ranks (one all-reduce of
    all gradients and of a reached-flag per parameter); a parameter no rank reached
    keeps ``grad`` None, one some rank reached gets the average with zeros elsewhere."""
    if not is_dist_available_and_initialized():
        return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    reached = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(reached)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, anywhere in zip(params, reached.tolist()):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if anywhere else None
        offset += n
