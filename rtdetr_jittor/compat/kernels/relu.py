"""ReLU as one OpenMP kernel each way (``jt.code``): ``max(x, 0)``, gradient ``g`` where
the output is positive and 0 elsewhere (torch's ``threshold_backward``, 0 at ``x == 0``).
Jittor's ``nn.relu`` is a fused ternary that runs on one thread; its backward is the
costliest element-wise kernel of the r18vd training step (``bench.profile_jittor``).
Not fusable with neighbouring element-wise ops, so ``compat.ReLU`` uses it in training
only.
"""
from rtdetr_jittor._env import jt
from jittor import nn

# NaN stays 0 as in Jittor's ternary (torch propagates NaN; the engine refuses non-finite
# outputs either way).
_RELU_FORWARD = """
typedef in0_type T;
const int64_t n = in0->num;
const T* x = in0_p; T* y = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t i = 0; i < n; i++) y[i] = x[i] > T(0) ? x[i] : T(0);
"""

# in0 y (the output), in1 grad of y; out0 grad of x.
_RELU_BACKWARD = """
typedef in0_type T;
const int64_t n = in0->num;
const T* y = in0_p; const T* g = in1_p; T* gx = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t i = 0; i < n; i++) gx[i] = y[i] > T(0) ? g[i] : T(0);
"""


class _ReLU(jt.Function):
    def execute(self, x):
        self._y = jt.code(x.shape, x.dtype, [x], cpu_src=_RELU_FORWARD)
        return self._y

    def grad(self, g):
        return jt.code(g.shape, g.dtype, [self._y, g], cpu_src=_RELU_BACKWARD)


def relu(x):
    """``max(x, 0)`` and its gradient, multi-threaded (``nn.relu`` for empty ``x``)."""
    if x.numel() == 0:
        return nn.relu(x)
    return _ReLU.apply(x)
