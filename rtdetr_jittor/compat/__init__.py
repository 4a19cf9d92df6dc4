"""Where Jittor 1.3.11 is made to behave like PyTorch 2.13: every shim the Jittor twin
uses, one module per kind of difference. Model files import them from here
(``from rtdetr_jittor import compat`` / ``from rtdetr_jittor.compat import X``);
``docs/TWINS.md`` says when a model file must use one instead of the plain Jittor op.

torch semantics (``semantics.py``):

| shim | torch behaviour it reproduces | Jittor's difference |
|---|---|---|
| ``detach`` | ``Tensor.detach()``, out of place | ``Var.stop_grad()`` works in place and cuts earlier uses |
| ``topk``, ``argmax`` | int64 indices | int32 indices; ``jt.argmax`` returns ``(idx, val)`` |
| ``max_values`` | ``x.max(dim).values`` | ``Var.max(dim)`` spelling |
| ``floor_divide`` | floor division on negative operands | ``//`` truncates toward zero |
| ``to_numpy``, ``as_var_like`` | (values crossing frameworks: forced decisions, targets) | |

Gradients at ties (``ties.py``):

| shim | torch behaviour it reproduces | Jittor's difference |
|---|---|---|
| ``clamp`` | gradient 1 at the bounds | 0 at the bounds |
| ``maximum``, ``minimum`` | gradient split 0.5/0.5 where ``a == b`` | all of it to the second argument |
| ``absolute`` | gradient 0 at 0 | 1 at 0 |
| ``cdist_l1`` | ``torch.cdist(a, b, p=1)`` | no ``cdist`` |

Precision (``precision.py``):

| shim | torch behaviour it reproduces | measured Jittor difference |
|---|---|---|
| ``sigmoid`` | exact for very negative logits, gradient ``g (1 - y) y`` | float32 input clamped at -30: sigmoid(-34) = 9.4e-14, torch 1.7e-15; ties all logits below -30 |
| ``log_sigmoid`` | ``F.logsigmoid``, gradient ``sigmoid(-x)`` | composed ops not smooth at 0 |
| ``binary_cross_entropy_with_logits`` | ``reduction='none'``, gradient ``(sigmoid(x) - t) w`` | composed ops: ``-t - 0.5`` at x == 0, cancellation for confident logits |
| ``log1p`` | ``torch.log1p`` | none in Jittor |
| ``erf`` | gradient constant in x's dtype | float32 ``2/sqrt(pi)``: 5e-8 relative in float64 |
| ``sum64``, ``mean64`` | torch's accurate reductions (float64 accumulation) | naive float32 sums; ``mean`` backward uses a float32 ``1/n`` |
| ``constant`` | Python scalars in the tensor's dtype | Python floats become float32 constants |

torch.nn modules (``modules.py``; state_dict names and shapes are torch's):

| shim | torch behaviour it reproduces | measured Jittor difference |
|---|---|---|
| ``Conv2d`` | ``nn.Conv2d`` (same parameters), float32 values and gradients of torch's oneDNN convolution | Jittor's oneDNN binding: ``forward_inference`` (NHWC), two backward ops each reordering the output gradient, an input gradient for the image; ``kernels.conv`` (bit-identical to torch on this CPU), pointwise without gradients as a matrix product (``RTDETR_JITTOR_CONV=ops``: off) |
| ``ReLU`` | ``nn.ReLU`` | ``nn.relu`` runs on one thread; in training ``kernels.relu`` (``RTDETR_JITTOR_RELU=ops``: off) |
| ``SiLU`` | ``nn.SiLU`` (``x / (1 + exp(-x))``) | ``nn.SiLU`` fuses into long single-threaded element-wise chains (CSPRepLayer's end: 8.3 ms, split 1.0 ms); ``kernels.silu`` (``RTDETR_JITTOR_SILU=ops``: off) |
| ``BatchNorm2d`` | two-pass batch variance, unbiased running variance, ``num_batches_tracked`` | float32 sums over 1e5 values per channel (mean 100): output error 5.3e-4 (torch 5.4e-6, shim 3.8e-6) |
| ``LayerNorm`` | two-pass variance | E[x^2] - E[x]^2 in float32: 6x less accurate over 256 features with mean >> std |
| ``GELU`` | exact GELU with ``1/sqrt(2)`` in x's dtype | ``nn.GELU`` divides by a float32 sqrt(2) in float64 |
| ``MultiheadAttention`` | batch_first, ``in_proj_weight``/``in_proj_bias``/``out_proj``, bool masks True = may not attend | no torch-compatible module |
| ``Embedding`` | ``padding_idx`` row never trained | Jittor zeroes it at init but trains it |
| ``AvgPool2d`` | any map size, ``ceil_mode`` windows average in-bounds values | raises on maps no larger than the kernel |

Parameters and state_dicts (``parameters.py``, ``state_dict.py``):

| shim | torch behaviour it reproduces | Jittor's difference |
|---|---|---|
| ``make_buffer`` | ``register_buffer``: in the state_dict, never trained | every public Var attribute is trained |
| ``freeze`` | ``requires_grad_(False)`` for good | ``train()`` restores flags from the first ``eval()``'s snapshot |
| ``trainable_named_parameters`` | parameters with ``requires_grad`` | |
| ``has_consumers`` | ``grad is None`` for a parameter the loss does not reach | ``jt.grad`` returns zeros |
| ``load_state_dict_checked``, ``describe_state_dict_problems``, ``StateDictError`` | strict ``load_state_dict`` | ``load_state_dict`` never raises |

C++ kernels (``kernels/``, one file each; same math, speed and precision; shares of
Jittor's r18vd training step before -> after, ``bench.profile_jittor``):

| shim | replaces | measured |
|---|---|---|
| ``kernels.batch_norm`` (in ``BatchNorm2d``; ``RTDETR_JITTOR_BN=ops``: off) | composed batch statistics and backward | 20% -> 7% |
| ``kernels.layer_norm`` (in ``LayerNorm``; ``RTDETR_JITTOR_LN=ops``: off) | composed statistics and backward | |
| ``bmm`` | 3-D ``jt.matmul`` (single-threaded) | attention matmul 10% -> 6%; float32 through oneDNN's sgemm: (16, 500, 500) @ (16, 500, 32) 9.1 -> 1.5 ms |
| ``relu`` (in ``ReLU``, training) | ``nn.relu`` (single-threaded ternary) | r18vd backbone forward+backward 1420 -> 1230 ms |
| ``silu`` (in ``SiLU``) | ``nn.silu`` (single-threaded, inside long fused chains) | r18vd eval element-wise kernels 58.5 -> 22.2 ms, SiLU kernels 3.3 ms |
| ``max_pool2d`` | ``nn.max_pool2d`` (single-threaded; raises on maps no larger than the kernel; NaN not propagated) | stem pool, forward and backward, 2.5% -> 0.6% |
| ``softmax`` | ``nn.softmax`` over the last dimension | attention softmax 2.7% -> 0.8% |
| ``adamw`` (in ``optim.AdamW``; ``RTDETR_JITTOR_ADAMW=ops``: off) | the update as ~15 Jittor ops per parameter (float64: Python scalars become float32 constants, 1.5e-6 off torch after 20 steps; kernel 3.6e-15) | r18vd optimizer step 84-95 -> 48 ms |
| ``deformable_attention`` (``RTDETR_JITTOR_MSDA=ops``: off) | per-level ``nn.grid_sample`` + weighted sum | |
"""
from rtdetr_common.checkpoint_io import StateDictError

from .kernels.bmm import bmm
from .kernels.deformable_attention import deformable_attention
from .kernels.max_pool import max_pool2d
from .kernels.softmax import softmax
from .modules import AvgPool2d, BatchNorm2d, Conv2d, Embedding, GELU, LayerNorm, MultiheadAttention, ReLU, SiLU
from .parameters import freeze, has_consumers, make_buffer, trainable_named_parameters
from .precision import binary_cross_entropy_with_logits, constant, erf, log1p, log_sigmoid, mean64, sigmoid, sum64
from .semantics import argmax, as_var_like, detach, floor_divide, max_values, to_numpy, topk
from .state_dict import describe_state_dict_problems, load_state_dict_checked
from .ties import absolute, cdist_l1, clamp, maximum, minimum

__all__ = [
    "StateDictError", "bmm", "deformable_attention", "softmax",
    "AvgPool2d", "BatchNorm2d", "Embedding", "GELU", "LayerNorm", "MultiheadAttention",
    "freeze", "has_consumers", "make_buffer", "trainable_named_parameters",
    "binary_cross_entropy_with_logits", "constant", "erf", "log1p", "log_sigmoid", "mean64", "sigmoid", "sum64",
    "argmax", "as_var_like", "detach", "floor_divide", "max_values", "to_numpy", "topk",
    "describe_state_dict_problems", "load_state_dict_checked",
    "absolute", "cdist_l1", "clamp", "maximum", "minimum",
]
