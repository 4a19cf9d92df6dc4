"""The one place where Jittor 1.3.11 is made to behave like PyTorch 2.13.

Each shim answers one measured difference (see README, "Jittor vs PyTorch"):

- ``detach``: out of place (``Var.stop_grad()`` works in place and cuts earlier uses).
- ``clamp``: gradient 1 at the bounds, as torch (Jittor gives 0 there).
- ``topk``/``argmax``/``max_values``: int64 indices and torch-like return values.
- ``floor_divide``: Python floor semantics (Jittor's ``//`` truncates toward zero).
- ``bce_with_logits``: element-wise, stable, no ``reduction`` surprises.
- ``BatchNorm2d``: two-pass variance in float64, unbiased running variance, ``num_batches_tracked``;
  in training one OpenMP kernel each way (statistics in double, torch's backward formula).
- ``FrozenBatchNorm2d``-style buffers: ``make_buffer`` gives a Var that is never trained.
- ``LayerNorm``: two-pass variance in float64 (Jittor's E[x^2]-E[x]^2 loses precision);
  on CPU one OpenMP kernel each way.
- ``MultiheadAttention``: torch's batch_first semantics and key names
  (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), boolean masks where True
  means "may not attend".
- ``bmm``, ``softmax``: attention's batched matmul and last-dimension softmax as OpenMP
  kernels (forward and backward); Jittor's 3-D ``matmul`` is a single-threaded
  broadcast-multiply-reduce (speed only, same sums).
- ``freeze``: parameters frozen before the first ``eval()`` stay frozen (Jittor's
  ``train()`` restores gradient flags from a snapshot taken at the first ``eval()``).
- ``load_state_dict_checked``: fails on missing, unexpected or mis-shaped keys
  (Jittor's ``load_state_dict`` never raises).
"""
import math
import os

import numpy as np

from rtdetr_jittor._env import jt
from jittor import nn

from rtdetr_common.checkpoint_io import StateDictError  # noqa: F401  (raised below; callers import it from here)


def detach(x):
    """Out-of-place detach: a new Var with no gradient path; ``x`` is untouched."""
    return x.detach()


def clamp(x, min=None, max=None):
    """``torch.clamp`` with torch's gradient: 1 where min <= x <= max (bounds included)."""
    out = x
    if min is not None:
        out = jt.where(out < min, jt.full_like(out, min), out)
    if max is not None:
        out = jt.where(out > max, jt.full_like(out, max), out)
    return out


def topk(x, k, dim=-1, largest=True):
    """``(values, indices)`` with int64 indices. Tie order may differ from torch."""
    values, indices = jt.topk(x, k, dim=dim, largest=largest)
    return values, indices.int64()


def argmax(x, dim, keepdim=False):
    """Index of the maximum along ``dim`` as int64 (Jittor returns ``(idx, val)``)."""
    idx, _ = jt.argmax(x, dim, keepdims=keepdim)
    return idx.int64()


def max_values(x, dim, keepdim=False):
    """Maximum values along ``dim`` (torch's ``x.max(dim).values``)."""
    return x.max(dim, keepdims=keepdim)


def floor_divide(a, b):
    """Floor division with Python/torch semantics for negative operands (exact for integers)."""
    if not isinstance(a, jt.Var):
        return a // b
    if a.dtype.is_float() or isinstance(b, float) or (isinstance(b, jt.Var) and b.dtype.is_float()):
        return jt.floor(a / b)
    q = a // b  # integer division truncates toward zero; step down where the remainder's sign differs from b's
    r = a - q * b
    wrong_sign = ((r < 0) != (b < 0)) if isinstance(b, jt.Var) else ((r > 0) if b < 0 else (r < 0))
    return q - (wrong_sign & (r != 0)).astype(q.dtype)


def bce_with_logits(logits, targets, weight=None):
    """Element-wise binary cross-entropy on logits (no reduction), numerically stable."""
    pos = logits >= 0  # one branch for both max(x, 0) and -|x|: gradient sigmoid(x) - t at x == 0 too
    loss = (jt.where(pos, logits, jt.zeros_like(logits)) - logits * targets
            + jt.log(1 + jt.exp(jt.where(pos, -logits, logits))))
    if weight is not None:
        loss = loss * weight
    return loss


def make_buffer(value, dtype=None):
    """A Var that is stored in the state_dict but never receives a gradient."""
    if isinstance(value, jt.Var):
        var = value.detach()
    else:
        arr = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        # jt.array wraps int64 to int32 (and float64 to float32): integers and an explicit dtype are kept
        var = jt.array(arr, dtype=str(arr.dtype)) if dtype or arr.dtype.kind in "iu" else jt.array(arr)
    return var.stop_grad()


def freeze(module_or_var):
    """Freeze parameters for good. Call before the model's first ``eval()``."""
    params = [module_or_var] if isinstance(module_or_var, jt.Var) else module_or_var.parameters()
    for p in params:
        p.stop_grad()


def trainable_named_parameters(module):
    """``(name, Var)`` of parameters that receive gradients (module must be in train mode)."""
    return [(n, p) for n, p in module.named_parameters() if not p.is_stop_grad()]


def _const(value, dtype):
    """A one-element Var holding ``value`` in ``dtype`` (a Python float would become float32)."""
    return jt.array(np.array([value]), dtype=str(dtype))


# --- BatchNorm2d in training: batch statistics and backward as two OpenMP kernels ---

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
    """Training-mode batch normalisation; ``self.mean`` / ``self.var`` hold the batch
    statistics (detached) for the running averages."""

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


class BatchNorm2d(nn.Module):
    """BatchNorm2d matching torch: two-pass batch variance, unbiased running variance,
    ``num_batches_tracked``; momentum 0.1, eps 1e-5.

    Training on CPU runs as two OpenMP kernels (``_BatchNormTrain``: statistics in
    double, torch's backward formula); ``RTDETR_JITTOR_BN=ops`` or CUDA use the
    composed Jittor ops (``_train_ops``)."""

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

    def _train_fused(self, x):
        fn = _BatchNormTrain(self.eps)
        out = fn(x, self.weight, self.bias)
        return out, fn.mean, fn.var

    def execute(self, x):
        if self.is_training():
            use_ops = jt.flags.use_cuda or x.ndim != 4 or os.environ.get("RTDETR_JITTOR_BN", "fused") == "ops"
            out, mean, var = self._train_ops(x) if use_ops else self._train_fused(x)
            n = x.numel() // x.shape[1]
            # Jittor makes Python floats float32 constants; these are exact in x's dtype (float64 runs)
            unbiased = var * _const(n / max(n - 1, 1), x.dtype)
            m, keep = _const(self.momentum, x.dtype), _const(1 - self.momentum, x.dtype)
            self.running_mean.update((self.running_mean * keep + mean * m).detach())
            self.running_var.update((self.running_var * keep + unbiased * m).detach())
            self.num_batches_tracked.update((self.num_batches_tracked + 1).detach())
            return out
        inv = 1.0 / jt.sqrt(self.running_var + self.eps)
        out = (x - self.running_mean.reshape(1, -1, 1, 1)) * inv.reshape(1, -1, 1, 1)
        return out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class _Erf(jt.Function):
    """``jt.erf`` whose gradient ``2/sqrt(pi) exp(-x^2)`` takes that constant in x's dtype:
    Jittor's own erf backward rounds it to float32, 5e-8 relative in a float64 model."""

    def execute(self, x):
        self._x = x
        return jt.erf(x)

    def grad(self, grad_out):
        x = self._x
        return grad_out * _const(2.0 / math.sqrt(math.pi), x.dtype) * jt.exp(-x * x)


def erf(x):
    """torch's ``erf`` (forward and gradient in x's dtype)."""
    return _Erf()(x)


class GELU(nn.Module):
    """torch's exact GELU, ``0.5 x (1 + erf(x / sqrt(2)))``, computed as torch does (x times
    1/sqrt(2)) with that constant in x's dtype: ``nn.GELU`` divides by a float32 sqrt(2)
    even in float64."""

    def execute(self, x):
        return x * 0.5 * (erf(x * _const(1.0 / math.sqrt(2.0), x.dtype)) + 1.0)


# --- LayerNorm over the last dimension: OpenMP kernels, statistics in double ---

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


class _LayerNormFn(jt.Function):
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


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a two-pass variance (torch's precision).
    On CPU one OpenMP kernel each way (statistics in double); ``RTDETR_JITTOR_LN=ops``
    or CUDA use the composed Jittor ops."""

    def __init__(self, normalized_shape, eps=1e-5):
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = jt.ones(normalized_shape)
        self.bias = jt.zeros(normalized_shape)

    def execute(self, x):
        if not jt.flags.use_cuda and x.numel() > 0 and os.environ.get("RTDETR_JITTOR_LN", "fused") != "ops":
            return _LayerNormFn(self.eps)(x, self.weight, self.bias)
        # float64 statistics: float32 ones over 256 features with mean >> std were 6x less accurate than torch
        x64 = x.float64()
        d = x.shape[-1]
        mean64 = x64.sum(dim=-1, keepdims=True) / d  # not mean(): its backward uses a float32 1/d
        centered64 = x64 - mean64
        var = ((centered64 * centered64).sum(dim=-1, keepdims=True) / d).astype(x.dtype)
        centered = x - mean64.astype(x.dtype)
        return centered / jt.sqrt(var + self.eps) * self.weight + self.bias


# --- batched matmul (attention): one OpenMP kernel instead of broadcast-multiply-reduce ---

# C[n] = op(A[n]) @ op(B[n]), op = transpose when __TA__ / __TB__ is 1. Rows of C are
# independent, so they are shared among the OpenMP threads; every output element is a
# plain float sum over k in increasing order (as Jittor's reduce; torch's sgemm blocks it).
_BMM_SRC = """
typedef in0_type T;
constexpr bool TA = __TA__, TB = __TB__;
const int64_t N = in0_shape0, M = TA ? in0_shape2 : in0_shape1, K = TA ? in0_shape1 : in0_shape2;
const int64_t P = TB ? in1_shape1 : in1_shape2;
const T* A = in0_p; const T* B = in1_p; T* C = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t ni = 0; ni < N * M; ni++) {
    const int64_t n = ni / M, i = ni % M;
    const T* An = A + n * M * K;
    const T* Bn = B + n * K * P;
    T* c = C + ni * P;
    if (!TB) {
        for (int64_t j = 0; j < P; j++) c[j] = T(0);
        for (int64_t k = 0; k < K; k++) {
            const T a = TA ? An[k * M + i] : An[i * K + k];
            const T* b = Bn + k * P;
            for (int64_t j = 0; j < P; j++) c[j] += a * b[j];
        }
    } else {
        for (int64_t j = 0; j < P; j++) {
            const T* b = Bn + j * K;
            T acc = T(0);
            for (int64_t k = 0; k < K; k++) acc += (TA ? An[k * M + i] : An[i * K + k]) * b[k];
            c[j] = acc;
        }
    }
}
"""


def _bmm_kernel(a, b, ta, tb):
    n, m = a.shape[0], (a.shape[2] if ta else a.shape[1])
    p = b.shape[1] if tb else b.shape[2]
    src = _BMM_SRC.replace("__TA__", "true" if ta else "false").replace("__TB__", "true" if tb else "false")
    return jt.code([n, m, p], a.dtype, [a, b], cpu_src=src)


class _BatchedMatmul(jt.Function):
    def __init__(self, ta=False, tb=False):
        self.ta, self.tb = ta, tb

    def execute(self, a, b):
        self._a, self._b = a, b
        return _bmm_kernel(a, b, self.ta, self.tb)

    def grad(self, g):
        a, b, ta, tb = self._a, self._b, self.ta, self.tb
        da = _bmm_kernel(b, g, tb, True) if ta else _bmm_kernel(g, b, False, not tb)
        db = _bmm_kernel(g, a, True, ta) if tb else _bmm_kernel(a, g, not ta, False)
        return da, db


def bmm(a, b, transpose_a=False, transpose_b=False):
    """Batched matrix product of 3-D Vars: ``op(a) @ op(b)`` per leading index, ``op``
    transposing the last two dimensions when asked (``torch.bmm`` with ``.transpose(1, 2)``
    operands). Jittor's ``matmul`` on 3-D/4-D operands is a single-threaded
    broadcast-multiply-reduce whose backward is a strided reduction; this is one OpenMP
    kernel each way (``bench/jittor_repros.py``, ``bmm``). On CUDA: ``jt.matmul``."""
    assert a.ndim == 3 and b.ndim == 3, "bmm takes (N, M, K) and (N, K, P) Vars"
    if jt.flags.use_cuda:
        t = lambda v: v.transpose(0, 2, 1)  # noqa: E731
        return jt.matmul(t(a) if transpose_a else a, t(b) if transpose_b else b)
    return _BatchedMatmul(transpose_a, transpose_b)(a, b)


# --- softmax over the last dimension (attention): one OpenMP kernel each way ---

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
    """Softmax over the last dimension: ``exp(x - max) / sum`` per row, gradient
    ``y * (g - sum(g * y))`` (torch's); one OpenMP kernel each way on CPU (Jittor's
    ``nn.softmax`` is several single-threaded fused reductions), ``nn.softmax`` on CUDA."""
    if jt.flags.use_cuda or x.ndim == 0 or x.shape[-1] == 0 or x.numel() == 0:
        return nn.softmax(x, dim=-1)
    return _Softmax.apply(x)


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention (batch_first=True, no bias_kv, no zero_attn) in Jittor.

    ``attn_mask`` may be bool (True: may not attend) or float (added to the logits),
    of shape (L, S) or (B*num_heads, L, S). Returns ``(output, weights)`` with the
    attention weights averaged over heads (B, L, S) when ``need_weights`` (torch's default).
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
        q = q.reshape(b, l, h, d).transpose(0, 2, 1, 3) * _const(1.0 / math.sqrt(d), q.dtype)
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


def load_state_dict_checked(module, state_dict, strict=True):
    """Load ``state_dict`` (name -> numpy/Var/tensor) into ``module``; report problems.

    Returns ``{"missing": [...], "unexpected": [...], "mismatched": [(k, want, got)]}``.
    With ``strict`` any problem raises ``StateDictError`` before anything is loaded.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = []
    for k, var in own.items():
        if k in state_dict:
            got = tuple(np.shape(to_numpy(state_dict[k])))
            want = tuple(var.shape)
            if got != want and not (want == (1,) and got == ()):
                mismatched.append((k, want, got))
    problems = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        raise StateDictError(describe_state_dict_problems(problems))
    for k, var in own.items():
        if k in state_dict and not any(m[0] == k for m in mismatched):
            value = to_numpy(state_dict[k]).astype(str(var.dtype), copy=False).reshape(var.shape)
            var.update(jt.array(value, dtype=str(var.dtype)))
    return problems


def describe_state_dict_problems(problems, limit=10):
    """One readable paragraph naming missing, unexpected and mis-shaped keys."""
    lines = []
    for label in ("missing", "unexpected"):
        keys = problems[label]
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            lines.append(f"{len(keys)} {label} key(s): {', '.join(map(repr, keys[:limit]))}{more}")
    if problems["mismatched"]:
        shown = "; ".join(f"{k}: model {w} vs checkpoint {g}" for k, w, g in problems["mismatched"][:limit])
        lines.append(f"{len(problems['mismatched'])} mis-shaped key(s): {shown}")
    return "state_dict does not match the model: " + " | ".join(lines)


def to_numpy(value):
    """A NumPy array from a Var, a torch tensor or anything array-like (forced decisions,
    targets handed over from either framework)."""
    if isinstance(value, jt.Var):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# --- box ops and losses (matcher / criterion): torch's gradients at ties, accurate BCE ---

def _as_var_like(value, like):
    return value if isinstance(value, jt.Var) else jt.array(np.asarray(value, dtype=like.dtype.__str__()))


def _broadcast_pair(a, b):
    """Both as Vars of the broadcast shape (``jt.where`` does not broadcast zero-size)."""
    b = _as_var_like(b, a)
    a = _as_var_like(a, b)
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return (a if tuple(a.shape) == shape else a.broadcast(shape),
            b if tuple(b.shape) == shape else b.broadcast(shape))


def maximum(a, b):
    """``torch.maximum``: where ``a == b`` the gradient is split 0.5/0.5 (``jt.maximum``
    sends all of it to the second argument). NaN propagates."""
    a, b = _broadcast_pair(a, b)
    return jt.where(a > b, a, jt.where(a < b, b, a * 0.5 + b * 0.5))


def minimum(a, b):
    """``torch.minimum``: where ``a == b`` the gradient is split 0.5/0.5 (``jt.minimum``
    sends all of it to the second argument). NaN propagates."""
    a, b = _broadcast_pair(a, b)
    return jt.where(a < b, a, jt.where(a > b, b, a * 0.5 + b * 0.5))


def absolute(x):
    """``torch.abs``: gradient 0 at x == 0 (Jittor's ``abs`` gives 1 there)."""
    return jt.where(x > 0, x, jt.where(x < 0, -x, x * 0))


def cdist_l1(a, b):
    """``torch.cdist(a, b, p=1)`` for (N, D) and (M, D): (N, M) sums of |a_i - b_j|
    (Jittor has no ``cdist``)."""
    return absolute(a[:, None, :] - b[None, :, :]).sum(-1)


def log1p(x):
    """``log(1 + x)`` accurate for small |x| (Jittor has no ``log1p``): computed in
    float64 with the Kahan correction ``log(u) * x / (u - 1)``, returned in ``x``'s dtype.
    (Jittor compiles kernels with -Ofast, which may fold ``u - 1`` into ``x``; the float64
    ``log(1 + x)`` alone is still within 1e-16 absolute, far below float32 resolution.)"""
    x64 = x.float64()
    u = 1 + x64
    d = u - 1
    safe_d = jt.where(d == 0, jt.ones_like(d), d)
    out = jt.where(d == 0, x64, jt.log(u) * (x64 / safe_d))
    return out.astype(x.dtype)


def _sigmoid_values(x):
    e = jt.exp(-jt.abs(x))
    return jt.where(x >= 0, 1 / (1 + e), e / (1 + e))


class _Sigmoid(jt.Function):
    def execute(self, x):
        self._y = _sigmoid_values(x).detach()
        return self._y

    def grad(self, g):
        return g * (1 - self._y) * self._y


def sigmoid(x):
    """``torch.sigmoid``: Jittor's float32 ``sigmoid`` clamps its input at -30
    (sigmoid(-34) gives sigmoid(-30) = 9.4e-14, torch 1.7e-15), which ties all very
    negative logits; this one is exact there, with torch's gradient ``g * (1 - y) * y``."""
    return _Sigmoid.apply(x)


class _LogSigmoid(jt.Function):
    def execute(self, x):
        self._x = x.detach()
        return (minimum(x, 0) - log1p(jt.exp(-jt.abs(x)))).detach()

    def grad(self, g):
        return g * _sigmoid_values(-self._x)


def log_sigmoid(x):
    """``torch.nn.functional.logsigmoid``: ``min(x, 0) - log1p(exp(-|x|))`` with the
    gradient ``sigmoid(-x)`` (smooth at 0, unlike the composed Jittor ops)."""
    return _LogSigmoid.apply(x)


class _BCEWithLogits(jt.Function):
    def execute(self, x, t, w):
        self._x, self._t, self._w = x.detach(), t.detach(), w.detach()
        self._raw = ((1 - t) * x - log_sigmoid(x)).detach()
        return self._raw * w

    def grad(self, g):
        x, t, w = self._x, self._t, self._w
        return g * (_sigmoid_values(x) - t) * w, -g * x * w, g * self._raw


def binary_cross_entropy_with_logits(logits, targets, weight=None):
    """``F.binary_cross_entropy_with_logits(..., reduction='none')`` as torch 2.x computes
    it: ``((1 - t) * x - logsigmoid(x)) * weight``, gradient ``(sigmoid(x) - t) * weight``.
    Unlike ``bce_with_logits`` above, its gradient is right at x == 0 (there the
    composed Jittor ops give ``-t - 0.5`` instead of ``0.5 - t``) and has no
    cancellation for confident logits."""
    targets = _as_var_like(targets, logits).astype(logits.dtype)
    weight = jt.ones_like(logits) if weight is None else _as_var_like(weight, logits).astype(logits.dtype)
    shape = np.broadcast_shapes(tuple(logits.shape), tuple(targets.shape), tuple(weight.shape))
    return _BCEWithLogits.apply(logits.broadcast(shape), targets.broadcast(shape), weight.broadcast(shape))


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
