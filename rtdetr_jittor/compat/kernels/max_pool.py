"""2-D max pooling (no dilation, floor mode) as one OpenMP kernel each way
(``jt.code``), one image plane per task. Forward keeps, per output, the position of the
first maximum in scan order, NaN winning as in torch (``val > max || isnan(val)``; the
check per value runs only on planes that hold a NaN);
backward adds each output's gradient at that position, plane by plane in output order
(the order of Jittor's own single-threaded kernel, so the sums are the same). Jittor's
``nn.max_pool2d`` runs on one thread: the stem's pool of the r18vd training step is one
of its costliest custom kernels (``bench.profile_jittor``).
"""
from rtdetr_jittor._env import jt
from jittor import nn

# Kernels are compiled with -Ofast, which folds ``v != v`` and std::isnan to false: NaN is
# recognised by its bits.
_HEADER = """
#include <algorithm>
#include <cstdint>
#include <cstring>
static inline bool bits_nan(float v) { uint32_t b; std::memcpy(&b, &v, 4); return (b & 0x7fffffffu) > 0x7f800000u; }
static inline bool bits_nan(double v) {
    uint64_t b; std::memcpy(&b, &v, 8); return (b & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}
template <class T> static inline bool any_nan(const T* x, int64_t n) {
    bool found = false;
    for (int64_t i = 0; i < n; i++) found |= bits_nan(x[i]);
    return found;
}
"""

_MAX_POOL_FORWARD = """
typedef in0_type T;
const int64_t H = in0_shape2, W = in0_shape3, OH = out0_shape2, OW = out0_shape3;
const int64_t planes = in0_shape0 * in0_shape1;
#pragma omp parallel for schedule(static)
for (int64_t c = 0; c < planes; c++) {
    const T* x = in0_p + c * H * W;
    T* y = out0_p + c * OH * OW;
    const bool nan_in_plane = any_nan(x, H * W);  // NaN must win, which costs a check per value
    __POSITIONS__
    for (int64_t i = 0; i < OH; i++) {
        const int64_t h0 = std::max<int64_t>(i * __SH__ - __PH__, 0);
        const int64_t h1 = std::min<int64_t>(i * __SH__ - __PH__ + __KH__, H);
        for (int64_t j = 0; j < OW; j++) {
            const int64_t w0 = std::max<int64_t>(j * __SW__ - __PW__, 0);
            const int64_t w1 = std::min<int64_t>(j * __SW__ - __PW__ + __KW__, W);
            int64_t best = h0 * W + w0;
            T m = x[best];
            if (nan_in_plane) {
                for (int64_t p = h0; p < h1; p++)
                    for (int64_t q = w0; q < w1; q++) {
                        const T v = x[p * W + q];
                        const bool take = (v > m) | bits_nan(v);
                        m = take ? v : m;
                        best = take ? p * W + q : best;
                    }
            } else {
                for (int64_t p = h0; p < h1; p++)
                    for (int64_t q = w0; q < w1; q++) {
                        const T v = x[p * W + q];
                        const bool take = v > m;
                        m = take ? v : m;
                        best = take ? p * W + q : best;
                    }
            }
            y[i * OW + j] = m;
            __STORE_POSITION__
        }
    }
}
"""

# in0 positions (int32), in1 grad of the output; out0 grad of the input.
_MAX_POOL_BACKWARD = """
typedef in1_type T;
const int64_t HW = out0_shape2 * out0_shape3, OHW = in0_shape2 * in0_shape3;
const int64_t planes = in0_shape0 * in0_shape1;
#pragma omp parallel for schedule(static)
for (int64_t c = 0; c < planes; c++) {
    T* gx = out0_p + c * HW;
    const int32_t* at = in0_p + c * OHW;
    const T* g = in1_p + c * OHW;
    for (int64_t k = 0; k < HW; k++) gx[k] = T(0);
    for (int64_t k = 0; k < OHW; k++) gx[at[k]] += g[k];
}
"""


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _MaxPool2d(jt.Function):
    def execute(self, x, kernel_size, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        n, c, h, w = x.shape
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        src = _MAX_POOL_FORWARD
        for name, value in (("KH", kh), ("KW", kw), ("SH", sh), ("SW", sw), ("PH", ph), ("PW", pw)):
            src = src.replace(f"__{name}__", str(value))
        if jt.flags.no_grad:  # no backward will come: values only
            src = src.replace("__POSITIONS__", "").replace("__STORE_POSITION__", "")
            return jt.code((n, c, oh, ow), x.dtype, [x], cpu_header=_HEADER, cpu_src=src)
        src = src.replace("__POSITIONS__", "int32_t* at = out1_p + c * OH * OW;")
        src = src.replace("__STORE_POSITION__", "at[i * OW + j] = (int32_t)best;")
        y, self._at = jt.code([(n, c, oh, ow), (n, c, oh, ow)], [x.dtype, "int32"], [x],
                              cpu_header=_HEADER, cpu_src=src)
        self._input_shape = x.shape
        return y

    def grad(self, g):
        gx = jt.code(self._input_shape, g.dtype, [self._at, g], cpu_src=_MAX_POOL_BACKWARD)
        return gx, None, None, None


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """``F.max_pool2d(x, kernel_size, stride, padding)`` (floor mode, no dilation), forward
    and backward multi-threaded; Jittor's ``nn.max_pool2d`` where the kernel does not apply
    (an empty input, a window that would lie wholly in the padding)."""
    kernel_size = _pair(kernel_size)
    stride = _pair(stride if stride is not None else kernel_size)
    padding = _pair(padding)
    if x.ndim != 4 or x.numel() == 0 or padding[0] * 2 > kernel_size[0] or padding[1] * 2 > kernel_size[1]:
        return nn.max_pool2d(x, kernel_size, stride, padding)
    return _MaxPool2d.apply(x, kernel_size, stride, padding)
