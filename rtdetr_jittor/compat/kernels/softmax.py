"""Softmax over the last dimension as one OpenMP kernel each way (``jt.code``):
``exp(x - max) / sum`` per row, gradient ``y * (g - sum(g * y))`` (torch's formula).
Jittor's ``nn.softmax`` is several single-threaded fused reductions (2.7% of the r18vd
training step in attention, 0.8% with this kernel).
"""
from rtdetr_jittor._env import jt
from jittor import nn

_SOFTMAX_FORWARD = """
typedef in0_type T;
const int64_t D = in0_shape__LAST__, R = in0->num / D;
const T* x = in0_p; T* y = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t r = 0; r < R; r++) {
    const T* a = x + r * D;
    T* b = y + r * D;
    T m = a[0];
    for (int64_t i = 1; i < D; i++) m = a[i] > m ? a[i] : m;
    T sum = T(0);
    for (int64_t i = 0; i < D; i++) { b[i] = std::exp(a[i] - m); sum += b[i]; }
    for (int64_t i = 0; i < D; i++) b[i] = b[i] / sum;
}
"""

# in0 y (the softmax), in1 grad of y; out0 grad x = y * (g - sum(g * y)) (torch's formula).
_SOFTMAX_BACKWARD = """
typedef in0_type T;
const int64_t D = in0_shape__LAST__, R = in0->num / D;
const T* y = in0_p; const T* g = in1_p; T* gx = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t r = 0; r < R; r++) {
    const T* a = y + r * D;
    const T* b = g + r * D;
    T* c = gx + r * D;
    T dot = T(0);
    for (int64_t i = 0; i < D; i++) dot += a[i] * b[i];
    for (int64_t i = 0; i < D; i++) c[i] = a[i] * (b[i] - dot);
}
"""



class _Softmax(jt.Function):
    def execute(self, x):
        src = _SOFTMAX_FORWARD.replace("__LAST__", str(x.ndim - 1))
        self._y = jt.code(x.shape, x.dtype, [x], cpu_header="#include <cmath>", cpu_src=src)
        return self._y

    def grad(self, g):
        src = _SOFTMAX_BACKWARD.replace("__LAST__", str(g.ndim - 1))
        return jt.code(g.shape, g.dtype, [self._y, g], cpu_src=src)


def softmax(x):
    """Softmax over the last dimension (``nn.softmax`` for empty or 0-d ``x``, which
    the kernel does not take)."""
    if x.ndim == 0 or x.numel() == 0:
        return nn.softmax(x, dim=-1)
    return _Softmax.apply(x)
