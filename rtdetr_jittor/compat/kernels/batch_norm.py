"""Training-mode BatchNorm2d as two OpenMP kernels (``jt.code``): batch statistics and
normalisation in one, torch's backward formula in the other, sums in double.

Jittor's composed ops reduce each channel as several single-threaded fused reductions
(20% of the r18vd training step, 7% with these kernels; ``bench/jittor_repros.py``).
``compat.BatchNorm2d`` calls ``batch_norm_train`` unless ``RTDETR_JITTOR_BN=ops``.
"""
from rtdetr_jittor._env import jt

# in0 x (N, C, H, W), in1 weight (C,), in2 bias (C,); out0 y, out1 batch mean (C,),
# out2 biased batch variance (C,). Per channel: two-pass statistics in double, then
# y = (x - mean) * (1 / sqrt(var + eps)) * weight + bias in x's dtype.
_BN_FORWARD = """
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
const T* x = in0_p; const T* weight = in1_p; const T* bias = in2_p;
T* y = out0_p; T* mean_out = out1_p; T* var_out = out2_p;
const double n = double(N * HW);
#pragma omp parallel for schedule(dynamic)
for (int64_t c = 0; c < C; c++) {
    double sum = 0;
    for (int64_t b = 0; b < N; b++) {
        const T* p = x + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) sum += (double)p[i];
    }
    const double mean64 = sum / n;
    double sq = 0;
    for (int64_t b = 0; b < N; b++) {
        const T* p = x + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) { const double d = (double)p[i] - mean64; sq += d * d; }
    }
    const T mean = (T)mean64, var = (T)(sq / n);
    const T inv = T(1) / std::sqrt(var + T(__EPS__));
    const T w = weight[c], bb = bias[c];
    for (int64_t b = 0; b < N; b++) {
        const T* p = x + (b * C + c) * HW;
        T* q = y + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) q[i] = (p[i] - mean) * inv * w + bb;
    }
    mean_out[c] = mean;
    var_out[c] = var;
}
"""

# in0 x, in1 grad of y, in2 mean, in3 var, in4 weight; out0 grad x, out1 grad weight,
# out2 grad bias. torch's formula (native_batch_norm_backward, training), sums in double:
# dx = (g - sum(g) / n - (x - mean) * sum((x - mean) g) * inv^2 / n) * inv * weight.
_BN_BACKWARD = """
typedef in0_type T;
const int64_t N = in0_shape0, C = in0_shape1, HW = in0_shape2 * in0_shape3;
const T* x = in0_p; const T* g = in1_p; const T* mean_in = in2_p; const T* var_in = in3_p; const T* weight = in4_p;
T* gx = out0_p; T* gw = out1_p; T* gb = out2_p;
const double n = double(N * HW);
#pragma omp parallel for schedule(dynamic)
for (int64_t c = 0; c < C; c++) {
    const double mean = (double)mean_in[c];
    const T inv_t = T(1) / std::sqrt(var_in[c] + T(__EPS__));
    const double inv = (double)inv_t;
    double sum_g = 0, dot = 0;
    for (int64_t b = 0; b < N; b++) {
        const T* p = x + (b * C + c) * HW;
        const T* q = g + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) { sum_g += (double)q[i]; dot += ((double)p[i] - mean) * (double)q[i]; }
    }
    const double k = dot * inv * inv / n, mean_g = sum_g / n, scale = inv * (double)weight[c];
    for (int64_t b = 0; b < N; b++) {
        const T* p = x + (b * C + c) * HW;
        const T* q = g + (b * C + c) * HW;
        T* r = gx + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) r[i] = (T)(((double)q[i] - mean_g - ((double)p[i] - mean) * k) * scale);
    }
    gw[c] = (T)(dot * inv);
    gb[c] = (T)sum_g;
}
"""




class _BatchNormTrain(jt.Function):
    """Forward and backward kernels; ``self.mean`` / ``self.var`` keep the batch statistics."""

    def __init__(self, eps):
        self.eps = repr(float(eps))

    def execute(self, x, weight, bias):
        c = x.shape[1]
        y, mean, var = jt.code([x.shape, (c,), (c,)], [x.dtype] * 3, [x, weight.astype(x.dtype), bias.astype(x.dtype)],
                               cpu_header="#include <cmath>", cpu_src=_BN_FORWARD.replace("__EPS__", self.eps))
        self._x, self._weight = x, weight
        self.mean, self.var = mean.detach(), var.detach()
        return y

    def grad(self, g):
        x, weight = self._x, self._weight
        gx, gw, gb = jt.code([x.shape, weight.shape, weight.shape], [x.dtype] * 3,
                             [x, g, self.mean, self.var, weight.astype(x.dtype)],
                             cpu_header="#include <cmath>", cpu_src=_BN_BACKWARD.replace("__EPS__", self.eps))
        return gx, gw.astype(weight.dtype), gb.astype(weight.dtype)


def batch_norm_train(x, weight, bias, eps):
    """``(y, mean, var)`` for an (N, C, H, W) ``x``: normalised with the biased batch
    statistics, which come back detached (for the running averages)."""
    fn = _BatchNormTrain(eps)
    y = fn(x, weight, bias)
    return y, fn.mean, fn.var
