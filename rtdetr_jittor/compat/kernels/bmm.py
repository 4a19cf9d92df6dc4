"""Batched matrix product of 3-D Vars as one kernel each way (``jt.code``).

Jittor's ``matmul`` on 3-D/4-D operands is a single-threaded broadcast-multiply-reduce
whose backward is a strided reduction (``bench/jittor_repros.py``, ``bmm``): 10% of the
r18vd training step. Float32 runs oneDNN's ``dnnl_sgemm`` per matrix (the library
Jittor's own 2-D ``matmul`` calls; torch's ``bmm`` is a blocked BLAS product too):
(16, 500, 500) @ (16, 500, 32) 9.1 -> 1.5 ms, and closer to the exact product (worst
5.7e-7 of scale against 1.3e-6 for the plain sum). Float64, and Jittor without oneDNN,
run an OpenMP loop with a plain sum over k in increasing order.
"""
from rtdetr_jittor._env import jt, backend_info

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

# oneDNN's row-major sgemm, already loaded by Jittor's oneDNN ops (dnnl.h's declaration).
_SGEMM_HEADER = """
#include <cstdint>
extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
"""

_SGEMM_SRC = """
constexpr bool TA = __TA__, TB = __TB__;
const int64_t N = in0_shape0, M = TA ? in0_shape2 : in0_shape1, K = TA ? in0_shape1 : in0_shape2;
const int64_t P = TB ? in1_shape1 : in1_shape2;
for (int64_t n = 0; n < N; n++) {
    const int status = dnnl_sgemm(TA ? 'T' : 'N', TB ? 'T' : 'N', M, P, K, 1.f, in0_p + n * M * K, TA ? M : K,
                                  in1_p + n * K * P, TB ? K : P, 0.f, out0_p + n * M * P, P);
    ASSERT(status == 0) << "dnnl_sgemm failed:" << status;
}
"""


def _bmm_kernel(a, b, ta, tb):
    n, m = a.shape[0], (a.shape[2] if ta else a.shape[1])
    p = b.shape[1] if tb else b.shape[2]
    sgemm = a.dtype == "float32" and b.dtype == "float32" and backend_info()["onednn"]
    src = (_SGEMM_SRC if sgemm else _BMM_SRC).replace("__TA__", "true" if ta else "false")
    src = src.replace("__TB__", "true" if tb else "false")
    return jt.code([n, m, p], a.dtype, [a, b], cpu_src=src, cpu_header=_SGEMM_HEADER if sgemm else "")


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
    """``op(a) @ op(b)`` per leading index for (N, M, K) and (N, K, P) Vars, ``op``
    transposing the last two dimensions when asked (``torch.bmm`` with
    ``.transpose(1, 2)`` operands)."""
    assert a.ndim == 3 and b.ndim == 3, "bmm takes (N, M, K) and (N, K, P) Vars"
    return _BatchedMatmul(transpose_a, transpose_b)(a, b)
