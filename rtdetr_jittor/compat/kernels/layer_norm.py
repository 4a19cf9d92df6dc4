"""LayerNorm over the last dimension as two OpenMP kernels (``jt.code``), statistics in
double: Jittor's composed ops compute E[x^2] - E[x]^2 in float32 and run as
single-threaded reductions. ``compat.LayerNorm`` calls ``layer_norm`` unless
``RTDETR_JITTOR_LN=ops``.
"""
from rtdetr_jittor._env import jt

# in0 x (..., D), in1 weight (D,), in2 bias (D,); out0 y, out1 mean (rows,), out2 std (rows,):
# mean and variance per row in double, y = (x - mean) / sqrt(var + eps) * weight + bias in x's dtype.
_LN_FORWARD = """
typedef in0_type T;
const int64_t D = in0_shape__LAST__, R = in0->num / D;
const T* x = in0_p; const T* weight = in1_p; const T* bias = in2_p;
T* y = out0_p; T* mean_out = out1_p; T* std_out = out2_p;
#pragma omp parallel for schedule(static)
for (int64_t r = 0; r < R; r++) {
    const T* a = x + r * D;
    T* b = y + r * D;
    double sum = 0;
    for (int64_t i = 0; i < D; i++) sum += (double)a[i];
    const double mean64 = sum / double(D);
    double sq = 0;
    for (int64_t i = 0; i < D; i++) { const double d = (double)a[i] - mean64; sq += d * d; }
    const T mean = (T)mean64, var = (T)(sq / double(D));
    const T sd = std::sqrt(var + T(__EPS__));
    for (int64_t i = 0; i < D; i++) b[i] = (a[i] - mean) / sd * weight[i] + bias[i];
    mean_out[r] = mean;
    std_out[r] = sd;
}
"""

# in0 x, in1 grad of y, in2 mean, in3 std, in4 weight; out0 grad x (rows in parallel),
# out1 grad weight, out2 grad bias (columns in parallel, each thread a block of columns).
_LN_BACKWARD = """
typedef in0_type T;
const int64_t D = in0_shape__LAST__, R = in0->num / D;
const T* x = in0_p; const T* g = in1_p; const T* mean_in = in2_p; const T* std_in = in3_p; const T* weight = in4_p;
T* gx = out0_p; T* gw = out1_p; T* gb = out2_p;
#pragma omp parallel for schedule(static)
for (int64_t r = 0; r < R; r++) {
    const T* a = x + r * D; const T* q = g + r * D; T* c = gx + r * D;
    const double mean = (double)mean_in[r], sd = (double)std_in[r];
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < D; i++) {
        const double gw_i = (double)q[i] * (double)weight[i];
        s1 += gw_i;
        s2 += gw_i * (((double)a[i] - mean) / sd);
    }
    s1 /= double(D); s2 /= double(D);
    for (int64_t i = 0; i < D; i++) {
        const double xhat = ((double)a[i] - mean) / sd;
        c[i] = (T)(((double)q[i] * (double)weight[i] - s1 - xhat * s2) / sd);
    }
}
#pragma omp parallel
{
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t j0 = D * t / nt, j1 = D * (t + 1) / nt;
    std::vector<double> acc_w(j1 - j0, 0.0), acc_b(j1 - j0, 0.0);
    for (int64_t r = 0; r < R; r++) {
        const T* a = x + r * D; const T* q = g + r * D;
        const double mean = (double)mean_in[r], sd = (double)std_in[r];
        for (int64_t j = j0; j < j1; j++) {
            acc_w[j - j0] += (double)q[j] * (((double)a[j] - mean) / sd);
            acc_b[j - j0] += (double)q[j];
        }
    }
    for (int64_t j = j0; j < j1; j++) { gw[j] = (T)acc_w[j - j0]; gb[j] = (T)acc_b[j - j0]; }
}
"""
_LN_HEADER = "#include <cmath>\n#include <vector>\n#include <omp.h>"




class _LayerNorm(jt.Function):
    def __init__(self, eps):
        self.eps = repr(float(eps))

    def execute(self, x, weight, bias):
        rows = x.numel() // x.shape[-1]
        y, mean, sd = jt.code([x.shape, (rows,), (rows,)], [x.dtype] * 3,
                              [x, weight.astype(x.dtype), bias.astype(x.dtype)], cpu_header=_LN_HEADER,
                              cpu_src=_LN_FORWARD.replace("__LAST__", str(x.ndim - 1)).replace("__EPS__", self.eps))
        self._x, self._weight, self._mean, self._sd = x, weight, mean.detach(), sd.detach()
        return y

    def grad(self, g):
        x, weight = self._x, self._weight
        gx, gw, gb = jt.code([x.shape, weight.shape, weight.shape], [x.dtype] * 3,
                             [x, g, self._mean, self._sd, weight.astype(x.dtype)], cpu_header=_LN_HEADER,
                             cpu_src=_LN_BACKWARD.replace("__LAST__", str(x.ndim - 1)))
        return gx, gw.astype(weight.dtype), gb.astype(weight.dtype)


def layer_norm(x, weight, bias, eps):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension of a non-empty ``x``."""
    return _LayerNorm(eps)(x, weight, bias)
