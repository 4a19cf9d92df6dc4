"""Small shared pieces of the RT-DETR zoo: inverse sigmoid, prior-probability bias,
activation lookup, and the multi-scale deformable attention core (bilinear
``grid_sample``, zero padding, ``align_corners=False``).

Jittor twin of ``reference_pytorch/rtdetr/utils.py``. The deformable attention core
runs ``compat.deformable_attention`` (one C++ kernel each way, the same arithmetic as
torch's ``grid_sample``); ``RTDETR_JITTOR_MSDA=ops`` runs the reference's per-level
``grid_sample`` formulation below instead.
"""
import math

from rtdetr_jittor._env import jt
from jittor import nn

from rtdetr_jittor.compat import GELU, ReLU, SiLU, clamp, deformable_attention, kernels


def inverse_sigmoid(x, eps=1e-5):
    """log(x / (1 - x)) with x clipped to [0, 1] and both terms clipped at ``eps``."""
    x = clamp(x, min=0.0, max=1.0)
    return jt.log(clamp(x, min=eps) / clamp(1 - x, min=eps))


def bias_init_with_prob(prior_prob=0.01):
    """The bias that makes sigmoid output ``prior_prob``."""
    return float(-math.log((1 - prior_prob) / prior_prob))


def get_activation(act, inplace=True):
    """An activation module by name ('silu', 'relu', 'leaky_relu', 'gelu', None)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, nn.Module):
        return act
    name = act.lower()
    if name == "silu":
        m = SiLU()
    elif name == "relu":
        m = ReLU()
    elif name == "leaky_relu":
        m = nn.LeakyReLU()
    elif name == "gelu":
        m = GELU()
    else:
        raise ValueError(f"unknown activation {act!r}")
    return m  # Jittor's activations have no in-place form: ``inplace`` is accepted and ignored


def deformable_attention_core_func(value, value_spatial_shapes, sampling_locations, attention_weights):
    """Multi-scale deformable attention.

    value: (B, sum(H*W), n_head, c); value_spatial_shapes: [(H, W)] per level;
    sampling_locations: (B, Lq, n_head, n_levels, n_points, 2) in [0, 1];
    attention_weights: (B, Lq, n_head, n_levels, n_points). Returns (B, Lq, n_head*c).
    """
    if kernels.enabled("MSDA"):
        return deformable_attention(value, value_spatial_shapes, sampling_locations, attention_weights)
    bs, _, n_head, c = value.shape
    _, len_q, _, n_levels, n_points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in value_spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(value_spatial_shapes):
        value_l = value_list[level].flatten(2).permute(0, 2, 1).reshape(bs * n_head, c, h, w)
        grid_l = sampling_grids[:, :, :, level].permute(0, 2, 1, 3, 4).flatten(0, 1)
        sampled.append(nn.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(bs * n_head, 1, len_q, n_levels * n_points)
    out = (jt.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).reshape(bs, n_head * c, len_q)
    return out.permute(0, 2, 1)
