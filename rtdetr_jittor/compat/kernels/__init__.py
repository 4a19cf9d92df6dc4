"""C++ kernels (``jt.code``, OpenMP, CPU) for ops Jittor runs slowly or imprecisely,
one file per kernel, each with its ``jt.Function`` wrapper (forward and backward) where
it is differentiated:

| file | entry point | replaces |
|---|---|---|
| ``batch_norm.py`` | ``batch_norm_train`` | BatchNorm2d's training statistics and backward (composed ops) |
| ``layer_norm.py`` | ``layer_norm`` | LayerNorm's statistics and backward (composed ops) |
| ``conv.py`` | ``conv2d`` | float32 ``nn.Conv2d`` through Jittor's oneDNN binding; oneDNN set up as PyTorch sets it up |
| ``bmm.py`` | ``bmm`` | 3-D ``jt.matmul`` (single-threaded broadcast-multiply-reduce); float32 through oneDNN's sgemm |
| ``relu.py`` | ``relu`` | ``nn.relu`` in training (single-threaded) |
| ``silu.py`` | ``silu`` | ``nn.silu`` (single-threaded; slow inside long fused element-wise chains) |
| ``adamw.py`` | ``adamw_update`` | AdamW's per-parameter update as Jittor ops (single-threaded; float32 constants in float64) |
| ``max_pool.py`` | ``max_pool2d`` | ``nn.max_pool2d`` (single-threaded; NaN not propagated) |
| ``softmax.py`` | ``softmax`` | ``nn.softmax`` over the last dimension |
| ``deformable_attention.py`` | ``deformable_attention`` | per-level ``nn.grid_sample`` + weighted sum |

Each computes the same math as what it replaces. ``RTDETR_JITTOR_BN=ops``,
``RTDETR_JITTOR_LN=ops``, ``RTDETR_JITTOR_MSDA=ops``, ``RTDETR_JITTOR_SILU=ops``,
``RTDETR_JITTOR_ADAMW=ops`` and ``RTDETR_JITTOR_CONV=ops`` switch the BatchNorm, LayerNorm,
deformable-attention, SiLU, AdamW and convolution kernels off for the composed Jittor ops
(``enabled``).
"""
import os


def enabled(name):
    """Whether the kernel switched by ``RTDETR_JITTOR_<name>`` runs (read at each call):
    any value but ``ops`` leaves it on."""
    return os.environ.get(f"RTDETR_JITTOR_{name}", "kernel") != "ops"
