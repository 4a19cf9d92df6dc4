"""Multi-scale deformable attention core as one OpenMP kernel each way (``jt.code``).

It computes what the reference's per-level ``grid_sample`` (bilinear, zero padding,
``align_corners=False``) and weighted sum compute, with torch's coordinate and
bilinear-weight arithmetic; Jittor's ``grid_sample`` builds four gathers per level and
its backward four scatter-adds, single-threaded. ``rtdetr/utils.py``'s
``deformable_attention_core_func`` calls ``deformable_attention`` unless
``RTDETR_JITTOR_MSDA=ops`` (then it runs the reference's ``grid_sample`` formulation).
"""
import numpy as np

from rtdetr_jittor._env import jt

# Per sampling point: torch's (vectorised CPU) grid_sample arithmetic: grid = 2 * loc - 1,
# unnormalised with align_corners=False, floor, distances to the four sides (dw, de, dn,
# ds), the four bilinear weights, zero padding.
_MSDA_HEADER = """
#include <cmath>
#include <cstdint>
// Jittor compiles kernels with -Ofast: without this barrier (2 * loc - 1) + 1 could be
// folded to 2 * loc and the coordinates would round differently from torch's.
template <class T> static inline T msda_opaque(T v) { __asm__ volatile("" : "+x"(v)); return v; }
#define MSDA_POINT(T, LOC, SHAPES, STARTS, l, li) \\
    const int Hl = SHAPES[(l) * 2], Wl = SHAPES[(l) * 2 + 1]; \\
    const T gx = msda_opaque<T>(LOC[(li) * 2] * T(2) - T(1)), gy = msda_opaque<T>(LOC[(li) * 2 + 1] * T(2) - T(1)); \\
    const T ix = msda_opaque<T>(((gx + T(1)) * T(Wl) - T(1)) / T(2)); \\
    const T iy = msda_opaque<T>(((gy + T(1)) * T(Hl) - T(1)) / T(2)); \\
    const T fx = std::floor(ix), fy = std::floor(iy); \\
    const int x0 = (int)fx, y0 = (int)fy, x1 = x0 + 1, y1 = y0 + 1; \\
    const T dw = msda_opaque<T>(ix - fx), de = T(1) - dw, dn = msda_opaque<T>(iy - fy), ds = T(1) - dn; \\
    const T nw = ds * de, ne = ds * dw, sw = dn * de, se = dn * dw; \\
    const bool in_nw = x0 >= 0 && x0 < Wl && y0 >= 0 && y0 < Hl, in_ne = x1 >= 0 && x1 < Wl && y0 >= 0 && y0 < Hl; \\
    const bool in_sw = x0 >= 0 && x0 < Wl && y1 >= 0 && y1 < Hl, in_se = x1 >= 0 && x1 < Wl && y1 >= 0 && y1 < Hl; \\
    const int64_t base = (int64_t)STARTS[l]; \\
    const int64_t r_nw = base + (int64_t)y0 * Wl + x0, r_ne = base + (int64_t)y0 * Wl + x1; \\
    const int64_t r_sw = base + (int64_t)y1 * Wl + x0, r_se = base + (int64_t)y1 * Wl + x1;
"""

# in0 value (B, Lv, nh, C), in1 shapes (L, 2) int32, in2 level starts (L,) int32,
# in3 locations (B, Q, nh, L, P, 2), in4 weights (B, Q, nh, L, P); out0 (B, Q, nh, C).
_MSDA_FORWARD = """
typedef in0_type T;
const int B = in0_shape0, LV = in0_shape1, NH = in0_shape2, C = in0_shape3;
const int Q = in3_shape1, NL = in3_shape3, NP = in3_shape4;
const T* value = in0_p; const int* shapes = in1_p; const int* starts = in2_p;
const T* loc = in3_p; const T* attn = in4_p; T* res = out0_p;
#pragma omp parallel for schedule(static)
for (int64_t bqh = 0; bqh < (int64_t)B * Q * NH; bqh++) {
    const int h = bqh % NH, b = bqh / ((int64_t)NH * Q);
    T* o = res + bqh * C;
    for (int c = 0; c < C; c++) o[c] = T(0);
    for (int l = 0; l < NL; l++) for (int p = 0; p < NP; p++) {
        const int64_t li = (bqh * NL + l) * NP + p;
        MSDA_POINT(T, loc, shapes, starts, l, li)
        const T w = attn[li];
        const T* v_nw = value + ((b * (int64_t)LV + r_nw) * NH + h) * C;
        const T* v_ne = value + ((b * (int64_t)LV + r_ne) * NH + h) * C;
        const T* v_sw = value + ((b * (int64_t)LV + r_sw) * NH + h) * C;
        const T* v_se = value + ((b * (int64_t)LV + r_se) * NH + h) * C;
        for (int c = 0; c < C; c++) {
            T s = T(0);
            if (in_nw) s += v_nw[c] * nw;
            if (in_ne) s += v_ne[c] * ne;
            if (in_sw) s += v_sw[c] * sw;
            if (in_se) s += v_se[c] * se;
            o[c] += s * w;
        }
    }
}
"""

# Inputs as the forward plus in5 grad_out (B, Q, nh, C); out0 d value, out1 d locations,
# out2 d weights. One thread per (batch, head): its d value slice is its own.
_MSDA_BACKWARD = """
typedef in0_type T;
const int B = in0_shape0, LV = in0_shape1, NH = in0_shape2, C = in0_shape3;
const int Q = in3_shape1, NL = in3_shape3, NP = in3_shape4;
const T* value = in0_p; const int* shapes = in1_p; const int* starts = in2_p;
const T* loc = in3_p; const T* attn = in4_p; const T* gout = in5_p;
T* gvalue = out0_p; T* gloc = out1_p; T* gattn = out2_p;
#pragma omp parallel for schedule(static)
for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    for (int64_t v = 0; v < LV; v++) {
        T* gv = gvalue + ((b * (int64_t)LV + v) * NH + h) * C;
        for (int c = 0; c < C; c++) gv[c] = T(0);
    }
    for (int q = 0; q < Q; q++) {
        const int64_t bqh = ((int64_t)b * Q + q) * NH + h;
        const T* g = gout + bqh * C;
        for (int l = 0; l < NL; l++) for (int p = 0; p < NP; p++) {
            const int64_t li = (bqh * NL + l) * NP + p;
            MSDA_POINT(T, loc, shapes, starts, l, li)
            const T w = attn[li];
            const int64_t o_nw = ((b * (int64_t)LV + r_nw) * NH + h) * C, o_ne = ((b * (int64_t)LV + r_ne) * NH + h) * C;
            const int64_t o_sw = ((b * (int64_t)LV + r_sw) * NH + h) * C, o_se = ((b * (int64_t)LV + r_se) * NH + h) * C;
            T gix = T(0), giy = T(0), gw = T(0);
            for (int c = 0; c < C; c++) {
                const T gs = g[c] * w;
                const T a_nw = in_nw ? value[o_nw + c] : T(0), a_ne = in_ne ? value[o_ne + c] : T(0);
                const T a_sw = in_sw ? value[o_sw + c] : T(0), a_se = in_se ? value[o_se + c] : T(0);
                gw += (a_nw * nw + a_ne * ne + a_sw * sw + a_se * se) * g[c];
                if (in_nw) gvalue[o_nw + c] += nw * gs;
                if (in_ne) gvalue[o_ne + c] += ne * gs;
                if (in_sw) gvalue[o_sw + c] += sw * gs;
                if (in_se) gvalue[o_se + c] += se * gs;
                gix = gix + ((a_ne - a_nw) * ds + (a_se - a_sw) * dn) * gs;
                giy = giy + ((a_sw - a_nw) * de + (a_se - a_ne) * dw) * gs;
            }
            gloc[li * 2] = gix * (T(Wl) / T(2)) * T(2);
            gloc[li * 2 + 1] = giy * (T(Hl) / T(2)) * T(2);
            gattn[li] = gw;
        }
    }
}
"""



class _DeformableAttention(jt.Function):
    """Forward and backward of the deformable attention core as two ``jt.code`` kernels."""

    def execute(self, value, shapes, starts, locations, weights):
        self._inputs = (value, shapes, starts, locations, weights)
        b, _, n_head, c = value.shape
        return jt.code([b, locations.shape[1], n_head, c], value.dtype, list(self._inputs),
                       cpu_header=_MSDA_HEADER, cpu_src=_MSDA_FORWARD)

    def grad(self, grad_out):
        value, shapes, starts, locations, weights = self._inputs
        g_value, g_loc, g_w = jt.code([value.shape, locations.shape, weights.shape], [value.dtype] * 3,
                                      [value, shapes, starts, locations, weights, grad_out],
                                      cpu_header=_MSDA_HEADER, cpu_src=_MSDA_BACKWARD)
        return g_value, None, None, g_loc, g_w


def deformable_attention(value, value_spatial_shapes, sampling_locations, attention_weights):
    """value: (B, sum(H*W), n_head, c); value_spatial_shapes: [(H, W)] per level;
    sampling_locations: (B, Lq, n_head, n_levels, n_points, 2) in [0, 1];
    attention_weights: (B, Lq, n_head, n_levels, n_points). Returns (B, Lq, n_head*c)."""
    bs, _, n_head, c = value.shape
    shapes = np.asarray([[int(h), int(w)] for h, w in value_spatial_shapes], dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]]).astype(np.int32)
    dtype = value.dtype
    out = _DeformableAttention.apply(value, jt.array(shapes, dtype="int32"), jt.array(starts, dtype="int32"),
                                     sampling_locations.astype(dtype), attention_weights.astype(dtype))
    return out.reshape(bs, sampling_locations.shape[1], n_head * c)
