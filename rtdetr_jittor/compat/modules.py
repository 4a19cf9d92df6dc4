"""torch.nn modules whose Jittor counterparts differ from torch's: Conv2d, ReLU and SiLU
(speed), BatchNorm2d and
LayerNorm (statistics precision, running variance, buffers), exact GELU,
MultiheadAttention (torch's parameter names and masks), Embedding (``padding_idx``
row not trained) and AvgPool2d (maps no larger than the kernel). State_dict names and
shapes are torch's, so the reference's state_dict loads unchanged."""
import math
import os

import numpy as np

from rtdetr_jittor._env import backend_info, jt
from jittor import nn

from . import kernels
from .kernels.batch_norm import batch_norm_train
from .kernels.bmm import bmm
from .kernels.conv import conv2d
from .kernels.layer_norm import layer_norm
from .kernels.relu import relu
from .kernels.silu import silu
from .kernels.softmax import softmax
from .parameters import make_buffer
from .precision import constant, erf

_ONEDNN = backend_info()["onednn"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict) whose float32 one-group
    convolutions run ``kernels.conv2d``: oneDNN set up as PyTorch sets it up
    (``forward_training`` on blocked layouts, both gradients in one backward call), so
    values and gradients are mostly bit-identical to torch's on the same CPU (measured:
    109 of 139 tensors, the rest within 4.7e-7 of scale). Without gradients (eval),
    pointwise convolutions (1x1, stride 1, no padding) run as one oneDNN matrix product
    per image on the NCHW data instead, which skips the layout reorders: (1, 512, 80, 80)
    -> 128 channels, 4.0 ms against 5.7 ms (with gradients the convolution is the faster,
    36.8 against 33.5 ms forward+backward at batch 2). Float64, grouped convolutions and a
    Jittor without oneDNN keep Jittor's convolution, as does ``RTDETR_JITTOR_CONV=ops``."""

    def execute(self, x):
        if not (x.dtype == "float32" and self.weight.dtype == "float32" and self.groups == 1 and x.ndim == 4
                and x.numel() > 0 and _ONEDNN and kernels.enabled("CONV")):
            return super().execute(x)
        pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        y = (self._pointwise_product(x) if pointwise and jt.flags.no_grad
             else conv2d(x, self.weight, self.stride, self.padding, self.dilation))
        if self.bias is not None:
            y = y + self.bias.reshape(1, self.out_channels, 1, 1)
        return y

    def _pointwise_product(self, x):
        n, c, h, w = x.shape
        weight = self.weight.reshape(self.out_channels, c)
        images = [jt.matmul(weight, x[i].reshape(c, h * w)).reshape(1, self.out_channels, h, w) for i in range(n)]
        return images[0] if n == 1 else jt.concat(images, 0)


class ReLU(nn.Module):
    """``nn.ReLU``: in training ``kernels.relu`` (multi-threaded, forward and backward);
    in eval Jittor's ``nn.relu``, which fuses with the element-wise ops before it (an
    eval-mode batch norm). Same values and gradients either way (``max`` rounds nothing).
    ``RTDETR_JITTOR_RELU=ops`` uses ``nn.relu`` always."""

    def execute(self, x):
        if self.is_training() and os.environ.get("RTDETR_JITTOR_RELU") != "ops":
            return relu(x)
        return nn.relu(x)


class SiLU(nn.Module):
    """``nn.SiLU`` as ``kernels.silu`` (multi-threaded, vectorised ``exp``, torch's
    formulas), in training and eval. ``RTDETR_JITTOR_SILU=ops`` uses ``nn.silu``."""

    def execute(self, x):
        if kernels.enabled("SILU"):
            return silu(x)
        return nn.silu(x)


class BatchNorm2d(nn.Module):
    """BatchNorm2d matching torch: two-pass batch variance, unbiased running variance,
    ``num_batches_tracked``; momentum 0.1, eps 1e-5.

    Training runs ``kernels.batch_norm`` (statistics in double, torch's backward
    formula); ``RTDETR_JITTOR_BN=ops`` uses the composed Jittor ops (``_train_ops``)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = jt.ones(num_features)
        self.bias = jt.zeros(num_features)
        self.running_mean = make_buffer(np.zeros(num_features, np.float32))
        self.running_var = make_buffer(np.ones(num_features, np.float32))
        self.num_batches_tracked = make_buffer(np.zeros((), np.int64).reshape(1))

    def _train_ops(self, x):
        # Statistics accumulated in float64: Jittor sums naively, which at ~1e5 elements
        # per channel made the float32 mean ~100x less accurate than torch's.
        # Sums divided by n, not mean(): Jittor's mean() backward uses a float32 1/n.
        x64 = x.float64()
        n = x.numel() // x.shape[1]
        mean64 = x64.sum(dims=(0, 2, 3)) / n
        centered64 = x64 - mean64.reshape(1, -1, 1, 1)
        mean = mean64.astype(x.dtype)
        var = ((centered64 * centered64).sum(dims=(0, 2, 3)) / n).astype(x.dtype)
        centered = x - mean.reshape(1, -1, 1, 1)
        inv = 1.0 / jt.sqrt(var + self.eps)
        out = centered * inv.reshape(1, -1, 1, 1)
        out = out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        return out, mean.detach(), var.detach()

    def execute(self, x):
        if self.is_training():
            if x.ndim == 4 and kernels.enabled("BN"):
                out, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
            else:
                out, mean, var = self._train_ops(x)
            n = x.numel() // x.shape[1]
            # Jittor makes Python floats float32 constants; these are exact in x's dtype (float64 runs)
            unbiased = var * constant(n / max(n - 1, 1), x.dtype)
            m, keep = constant(self.momentum, x.dtype), constant(1 - self.momentum, x.dtype)
            self.running_mean.update((self.running_mean * keep + mean * m).detach())
            self.running_var.update((self.running_var * keep + unbiased * m).detach())
            self.num_batches_tracked.update((self.num_batches_tracked + 1).detach())
            return out
        inv = 1.0 / jt.sqrt(self.running_var + self.eps)
        out = (x - self.running_mean.reshape(1, -1, 1, 1)) * inv.reshape(1, -1, 1, 1)
        return out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a two-pass variance (torch's precision).
    Runs ``kernels.layer_norm`` (statistics in double); ``RTDETR_JITTOR_LN=ops`` uses
    the composed Jittor ops."""

    def __init__(self, normalized_shape, eps=1e-5):
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = jt.ones(normalized_shape)
        self.bias = jt.zeros(normalized_shape)

    def execute(self, x):
        if x.numel() > 0 and kernels.enabled("LN"):
            return layer_norm(x, self.weight, self.bias, self.eps)
        # float64 statistics: float32 ones over 256 features with mean >> std were 6x less accurate than torch
        x64 = x.float64()
        d = x.shape[-1]
        mean64 = x64.sum(dim=-1, keepdims=True) / d  # not mean(): its backward uses a float32 1/d
        centered64 = x64 - mean64
        var = ((centered64 * centered64).sum(dim=-1, keepdims=True) / d).astype(x.dtype)
        centered = x - mean64.astype(x.dtype)
        return centered / jt.sqrt(var + self.eps) * self.weight + self.bias


class GELU(nn.Module):
    """torch's exact GELU, ``0.5 x (1 + erf(x / sqrt(2)))``, computed as torch does (x times
    1/sqrt(2)) with that constant in x's dtype: ``nn.GELU`` divides by a float32 sqrt(2)
    even in float64."""

    def execute(self, x):
        return x * 0.5 * (erf(x * constant(1.0 / math.sqrt(2.0), x.dtype)) + 1.0)


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention (batch_first=True, no bias_kv, no zero_attn) in Jittor.

    ``attn_mask`` may be bool (True: may not attend) or float (added to the logits),
    of shape (L, S) or (B*num_heads, L, S). Returns ``(output, weights)`` with the
    attention weights averaged over heads (B, L, S) when ``need_weights`` (torch's default).
    Products and softmax run as ``kernels.bmm`` / ``kernels.softmax``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, batch_first=True):
        assert batch_first, "only batch_first=True is supported"
        assert embed_dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.head_dim = embed_dim // num_heads
        bound = math.sqrt(6.0 / (embed_dim + 3 * embed_dim))
        self.in_proj_weight = jt.init.uniform((3 * embed_dim, embed_dim), "float32", -bound, bound)
        self.in_proj_bias = jt.zeros(3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        jt.init.zero_(self.out_proj.bias)

    def execute(self, query, key, value, attn_mask=None, key_padding_mask=None, need_weights=True):
        b, l, e = query.shape
        s = key.shape[1]
        h, d = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3, dim=0)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3, dim=0)
        q = nn.matmul_transpose(query, w_q) + b_q
        k = nn.matmul_transpose(key, w_k) + b_k
        v = nn.matmul_transpose(value, w_v) + b_v
        q = q.reshape(b, l, h, d).transpose(0, 2, 1, 3) * constant(1.0 / math.sqrt(d), q.dtype)
        k = k.reshape(b, s, h, d).transpose(0, 2, 1, 3)
        v = v.reshape(b, s, h, d).transpose(0, 2, 1, 3)
        logits = bmm(q.reshape(b * h, l, d), k.reshape(b * h, s, d), transpose_b=True).reshape(b, h, l, s)
        if attn_mask is not None:
            mask = attn_mask if attn_mask.ndim == 2 else attn_mask.reshape(b, h, l, s)
            if mask.dtype == jt.bool:
                logits = jt.where(mask.broadcast(logits.shape), jt.full_like(logits, float("-inf")), logits)
            else:
                logits = logits + mask
        if key_padding_mask is not None:
            pad = key_padding_mask.reshape(b, 1, 1, s).broadcast(logits.shape)
            logits = jt.where(pad, jt.full_like(logits, float("-inf")), logits)
        attn = softmax(logits)
        if self.dropout > 0 and self.is_training():
            attn = nn.dropout(attn, self.dropout, is_train=True)
        out = bmm(attn.reshape(b * h, l, s), v.reshape(b * h, s, d)).reshape(b, h, l, d)
        out = out.transpose(0, 2, 1, 3).reshape(b, l, e)
        return self.out_proj(out), (attn.mean(dim=1) if need_weights else None)


class Embedding(nn.Module):
    """``torch.nn.Embedding`` with ``padding_idx``: N(0, 1) init with the padding row
    zeroed, and the padding row receives no gradient (Jittor's ``nn.Embedding`` zeroes
    the row at init but still trains it). Indices may be any integer Var."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.weight = jt.init.gauss((num_embeddings, embedding_dim), "float32")
        if padding_idx is not None:
            self.weight[padding_idx] = 0.0

    def execute(self, x):
        weight = self.weight
        if self.padding_idx is not None:
            row = (jt.arange(self.num_embeddings) == self.padding_idx).reshape(-1, 1)
            weight = jt.where(row.broadcast(weight.shape), weight.detach(), weight)
        return weight[x]


class AvgPool2d(nn.Module):
    """``torch.nn.AvgPool2d(k, k, 0, ceil_mode)`` (kernel == stride, no padding) for any
    input size: Jittor's pool raises on maps no larger than the kernel (the ResNet-vd
    shortcut's 2x2 pool on a 2x2 map, i.e. 32-pixel images). Windows cut by ceil_mode
    average only their in-bounds values, as torch's."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        stride = kernel_size if stride is None else stride
        assert stride == kernel_size and padding == 0, "only kernel_size == stride and padding 0"
        self.kernel_size = kernel_size
        self.ceil_mode = ceil_mode

    def execute(self, x):
        k = self.kernel_size
        n, c, h, w = x.shape
        oh, ow = (-(-h // k), -(-w // k)) if self.ceil_mode else (h // k, w // k)
        x = x[:, :, :min(h, oh * k), :min(w, ow * k)]
        if oh * k > h or ow * k > w:
            x = nn.pad(x, (0, ow * k - x.shape[3], 0, oh * k - x.shape[2]))
        sums = x.reshape(n, c, oh, k, ow, k).sum(dims=(3, 5))
        rows = np.minimum(np.arange(1, oh + 1) * k, h) - np.arange(oh) * k
        cols = np.minimum(np.arange(1, ow + 1) * k, w) - np.arange(ow) * k
        return sums / jt.array((rows[:, None] * cols[None, :]).astype(np.float32))
