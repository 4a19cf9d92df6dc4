"""SiLU as one OpenMP kernel each way (``jt.code``), with torch's formulas:
``x / (1 + exp(-x))`` forward, ``g * s * (1 + x * (1 - s))`` with ``s = 1 / (1 + exp(-x))``
backward (ATen's ``silu`` and ``silu_backward``). Jittor's ``nn.SiLU`` is ``x * sigmoid(x)``
fused into the single-threaded element-wise kernel around it; at the end of the
encoder's CSPRepLayer that kernel (three eval batch norms, a sum, two SiLUs) took 8.3 ms
on (1, 128, 80, 80) maps, 1.0 ms split by this kernel (``bench.jittor_repros silu``).
Here the loop runs on every thread and ``exp`` is vectorised (``-Ofast`` with glibc's
vector maths).

``-Ofast`` divides through a reciprocal estimate, which turns ``x / (1 + inf)`` into NaN
and ``x / (1 + exp(88))`` into 0: the exponent is capped at ``CAP`` (80 in float32, 700
in float64), so for ``x < -CAP`` the value is ``x / (1 + exp(CAP))``, ``|x| * 1.8e-35`` in
float32 (``|x| * 1e-304`` in float64), where torch's is smaller still (0 for
``x <= -88.7`` in float32). NaN propagates; ``-inf`` gives ``-inf`` (torch: NaN).
"""
from rtdetr_jittor._env import jt
from jittor import nn

_CAP = """
typedef in0_type T;
const T cap = sizeof(T) == 4 ? T(80) : T(700);
"""

_SILU_FORWARD = _CAP + """
const int64_t n = in0->num;
const T* x = in0_p; T* y = out0_p;
#pragma omp parallel for simd schedule(static)
for (int64_t i = 0; i < n; i++) y[i] = x[i] / (T(1) + std::exp(-x[i] < cap ? -x[i] : cap));
"""

# in0 x (the input), in1 grad of y; out0 grad of x.
_SILU_BACKWARD = _CAP + """
const int64_t n = in0->num;
const T* x = in0_p; const T* g = in1_p; T* gx = out0_p;
#pragma omp parallel for simd schedule(static)
for (int64_t i = 0; i < n; i++) {
    const T s = T(1) / (T(1) + std::exp(-x[i] < cap ? -x[i] : cap));
    gx[i] = g[i] * s * (T(1) + x[i] * (T(1) - s));
}
"""


_HEADER = "#include <cmath>"


class _SiLU(jt.Function):
    def execute(self, x):
        self._x = x
        return jt.code(x.shape, x.dtype, [x], cpu_src=_SILU_FORWARD, cpu_header=_HEADER)

    def grad(self, g):
        return jt.code(g.shape, g.dtype, [self._x, g], cpu_src=_SILU_BACKWARD, cpu_header=_HEADER)


def silu(x):
    """``x * sigmoid(x)`` and its gradient, multi-threaded (``nn.silu`` for empty ``x``)."""
    if x.numel() == 0:
        return nn.silu(x)
    return _SiLU.apply(x)
