"""Backbone building blocks: conv + BatchNorm + activation, and the frozen BatchNorm
(affine parameters and statistics held as buffers, never trained) with the function
that swaps it in for every BatchNorm2d of a module."""
import torch
import torch.nn as nn

from ..rtdetr.utils import get_activation


class ConvNormLayer(nn.Module):
    """Conv2d (no bias by default, 'same' padding ``(k - 1) // 2``) -> BatchNorm2d -> act."""

    def __init__(self, ch_in, ch_out, kernel_size, stride, padding=None, bias=False, act=None):
        super().__init__()
        self.conv = nn.Conv2d(
            ch_in, ch_out, kernel_size, stride,
            padding=(kernel_size - 1) // 2 if padding is None else padding, bias=bias)
        self.norm = nn.BatchNorm2d(ch_out)
        self.act = nn.Identity() if act is None else get_activation(act)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all four buffers
    (``weight``, ``bias``, ``running_mean``, ``running_var``; no ``num_batches_tracked``)."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        n = num_features
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.eps = eps
        self.num_features = n

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # A checkpoint taken from a trainable BatchNorm2d carries this key; it is dropped.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x):
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norm2d(module):
    """Replace every ``nn.BatchNorm2d`` in ``module`` (or ``module`` itself) by a
    ``FrozenBatchNorm2d`` holding its current values; returns the (new) module."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = freeze_batch_norm2d(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
