"""Backbone building blocks: conv + BatchNorm + activation, and the frozen BatchNorm
(affine parameters and statistics held as buffers, never trained) with the function
that swaps it in for every BatchNorm2d of a module."""
from rtdetr_jittor._env import jt
from jittor import nn

from ..compat import BatchNorm2d, Conv2d, make_buffer
from ..rtdetr.utils import get_activation


class ConvNormLayer(nn.Module):
    """Conv2d (no bias by default, 'same' padding ``(k - 1) // 2``) -> BatchNorm2d -> act."""

    def __init__(self, ch_in, ch_out, kernel_size, stride, padding=None, bias=False, act=None):
        super().__init__()
        self.conv = Conv2d(
            ch_in, ch_out, kernel_size, stride,
            padding=(kernel_size - 1) // 2 if padding is None else padding, bias=bias)
        self.norm = BatchNorm2d(ch_out)
        self.act = nn.Identity() if act is None else get_activation(act)

    def execute(self, x):
        return self.act(self.norm(self.conv(x)))


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all four buffers
    (``weight``, ``bias``, ``running_mean``, ``running_var``; no ``num_batches_tracked``)."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        n = num_features
        self.weight = make_buffer(jt.ones(n))
        self.bias = make_buffer(jt.zeros(n))
        self.running_mean = make_buffer(jt.zeros(n))
        self.running_var = make_buffer(jt.ones(n))
        self.eps = eps
        self.num_features = n

    def execute(self, x):
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias


def freeze_batch_norm2d(module):
    """Replace every BatchNorm2d in ``module`` (or ``module`` itself) by a
    ``FrozenBatchNorm2d`` holding its current values; returns the (new) module."""
    if isinstance(module, BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.update(module.weight.detach())
        frozen.bias.update(module.bias.detach())
        frozen.running_mean.update(module.running_mean.detach())
        frozen.running_var.update(module.running_var.detach())
        return frozen
    for name, child in module.named_children():
        new_child = freeze_batch_norm2d(child)
        if new_child is not child:
            if isinstance(module, nn.Sequential):
                # Sequential keeps children in ``layers``; setattr would miss them.
                module.add_module(name, new_child)
            else:
                setattr(module, name, new_child)
    return module
