"""Float32 2-D convolution (one group) through oneDNN's C++ API, one kernel each way
(``jt.code``), set up as PyTorch's CPU convolution sets it up: the ``forward_training``
primitive on blocked layouts that oneDNN picks, input, weights and output reordered on
each call, and one backward call that computes the input and weight gradients together.
On the same CPU the results are bit-identical to ``torch.nn.functional.conv2d``
(``tests/test_compat.py``).

Jittor's own binding differs in three ways that cost time
(``python -m bench.jittor_repros conv``): it asks for ``forward_inference`` (an NHWC
kernel whose output reorder is dearer), it runs the two gradients as separate ops that
each reorder the output gradient, and it computes the input gradient of the first
convolution, whose input (the image) needs none. Scratch buffers for the blocked
layouts come from Jittor's allocator, which reuses freed blocks (oneDNN's own
allocations page-fault on every call: the stem's (2, 32, 320, 320) forward+backward took
96 ms that way, 71 ms with reused memory). Primitive descriptors are kept per geometry.
"""
from rtdetr_jittor._env import jt

_HEADER = r"""
#include <map>
#include <memory>
#include <vector>
#include <dnnl.hpp>
#include "mem/allocator.h"
namespace rtdetr_conv {
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;
static engine& cpu() { static engine e(engine::kind::cpu, 0); return e; }
static stream& queue() { static stream s(cpu()); return s; }
static memory::desc any(const memory::dims& d) { return memory::desc(d, dt::f32, tag::any); }
static memory plain(const memory::dims& d, tag t, void* p) { return memory(memory::desc(d, dt::f32, t), cpu(), p); }
// A buffer from Jittor's allocator, held until the kernel returns.
struct Scratch {
    std::vector<std::unique_ptr<jittor::Allocation>> held;
    memory take(const memory::desc& md) {
        held.emplace_back(new jittor::Allocation(jittor::get_allocator(), md.get_size()));
        return memory(md, cpu(), held.back()->ptr);
    }
    memory reordered(const memory& user, const memory::desc& want) {
        if (user.get_desc() == want) return user;
        memory m = take(want);
        reorder(user, m).execute(queue(), const_cast<memory&>(user), m);
        return m;
    }
    memory result(const memory& user, const memory::desc& want) { return user.get_desc() == want ? user : take(want); }
};
static void give_back(const memory& computed, const memory& user) {
    if (computed.get_desc() == user.get_desc()) return;
    reorder(computed, user).execute(queue(), const_cast<memory&>(computed), const_cast<memory&>(user));
}
struct Geometry {
    memory::dims src, wei, dst, stride, dilation, pad_l, pad_r;
    std::vector<int64_t> key() const {
        std::vector<int64_t> k;
        for (auto* v : {&src, &wei, &dst, &stride, &dilation, &pad_l, &pad_r}) k.insert(k.end(), v->begin(), v->end());
        return k;
    }
    convolution_forward::primitive_desc forward() const {
        return convolution_forward::primitive_desc(convolution_forward::desc(
            prop_kind::forward_training, algorithm::convolution_direct, any(src), any(wei), any(dst),
            stride, dilation, pad_l, pad_r), cpu());
    }
};
}
"""

# (N, C, H, W) input in0 and (O, C, KH, KW) weights in1; __SH__... substituted per geometry
# (dilation as torch counts it, 1 = none; oneDNN counts from 0).
_GEOMETRY = r"""
using namespace rtdetr_conv;
const int64_t N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const int64_t O = in1_shape0, KH = in1_shape2, KW = in1_shape3;
const int64_t OH = (H + 2 * __PH__ - (KH - 1) * __DH__ - 1) / __SH__ + 1;
const int64_t OW = (W + 2 * __PW__ - (KW - 1) * __DW__ - 1) / __SW__ + 1;
const Geometry g{{N, C, H, W}, {O, C, KH, KW}, {N, O, OH, OW}, {__SH__, __SW__}, {__DH__ - 1, __DW__ - 1},
                 {__PH__, __PW__},
                 {(OH - 1) * __SH__ + (KH - 1) * __DH__ + 1 - H - __PH__,
                  (OW - 1) * __SW__ + (KW - 1) * __DW__ + 1 - W - __PW__}};
Scratch scratch;
"""

_FORWARD = _GEOMETRY + r"""
struct Forward { convolution_forward::primitive_desc pd; convolution_forward run; };
static std::map<std::vector<int64_t>, std::unique_ptr<Forward>> cache;
try {
    auto& f = cache[g.key()];
    if (!f) { auto pd = g.forward(); f.reset(new Forward{pd, convolution_forward(pd)}); }
    memory y_user = plain(g.dst, tag::nchw, out0_p);
    memory x = scratch.reordered(plain(g.src, tag::nchw, in0_p), f->pd.src_desc());
    memory w = scratch.reordered(plain(g.wei, tag::oihw, in1_p), f->pd.weights_desc());
    memory y = scratch.result(y_user, f->pd.dst_desc());
    f->run.execute(queue(), {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    give_back(y, y_user);
    queue().wait();
} catch (const dnnl::error& e) {
    LOGf << "oneDNN convolution forward failed:" << e.what();
}
"""

# in0 x, in1 weights, in2 output gradient; out0 weight gradient, out1 input gradient
# (when the input takes a gradient).
_BACKWARD = _GEOMETRY + r"""
struct Backward {
    convolution_backward_data::primitive_desc data_pd; convolution_backward_data data;
    convolution_backward_weights::primitive_desc weights_pd; convolution_backward_weights weights;
};
static std::map<std::vector<int64_t>, std::unique_ptr<Backward>> cache;
try {
    auto& b = cache[g.key()];
    if (!b) {
        const auto hint = g.forward();
        convolution_backward_data::primitive_desc data_pd(convolution_backward_data::desc(
            algorithm::convolution_direct, any(g.src), any(g.wei), any(g.dst), g.stride, g.dilation, g.pad_l, g.pad_r),
            cpu(), hint);
        convolution_backward_weights::primitive_desc weights_pd(convolution_backward_weights::desc(
            algorithm::convolution_direct, any(g.src), any(g.wei), any(g.dst), g.stride, g.dilation, g.pad_l, g.pad_r),
            cpu(), hint);
        b.reset(new Backward{data_pd, convolution_backward_data(data_pd), weights_pd, convolution_backward_weights(weights_pd)});
    }
    const memory dy_user = plain(g.dst, tag::nchw, in2_p);
    const memory dw_user = plain(g.wei, tag::oihw, out0_p);
    memory dy = scratch.reordered(dy_user, b->weights_pd.diff_dst_desc());
    memory x = scratch.reordered(plain(g.src, tag::nchw, in0_p), b->weights_pd.src_desc());
    memory dw = scratch.result(dw_user, b->weights_pd.diff_weights_desc());
    b->weights.execute(queue(), {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_WEIGHTS, dw}});
    give_back(dw, dw_user);
#if __INPUT_GRAD__
    {
        const memory dx_user = plain(g.src, tag::nchw, out1_p);
        memory dy_data = b->data_pd.diff_dst_desc() == dy.get_desc() ? dy : scratch.reordered(dy_user, b->data_pd.diff_dst_desc());
        memory w = scratch.reordered(plain(g.wei, tag::oihw, in1_p), b->data_pd.weights_desc());
        memory dx = scratch.result(dx_user, b->data_pd.diff_src_desc());
        b->data.execute(queue(), {{DNNL_ARG_DIFF_DST, dy_data}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, dx}});
        give_back(dx, dx_user);
    }
#endif
    queue().wait();
} catch (const dnnl::error& e) {
    LOGf << "oneDNN convolution backward failed:" << e.what();
}
"""


def _source(template, stride, padding, dilation, input_grad=True):
    values = {"SH": stride[0], "SW": stride[1], "PH": padding[0], "PW": padding[1], "DH": dilation[0],
              "DW": dilation[1], "INPUT_GRAD": int(input_grad)}
    for name, value in values.items():
        template = template.replace(f"__{name}__", str(value))
    return template


class _Conv2d(jt.Function):
    def __init__(self, stride, padding, dilation):
        self.geometry = (stride, padding, dilation)

    def execute(self, x, weight):
        (sh, sw), (ph, pw), (dh, dw) = self.geometry
        n, _, h, w = x.shape
        kh, kw = weight.shape[2:]
        out_shape = (n, weight.shape[0], (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1,
                     (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1)
        self._x, self._weight, self._input_grad = x, weight, not x.is_stop_grad()
        return jt.code(out_shape, x.dtype, [x, weight], cpu_header=_HEADER, cpu_src=_source(_FORWARD, *self.geometry))

    def grad(self, g):
        x, weight = self._x, self._weight
        src = _source(_BACKWARD, *self.geometry, input_grad=self._input_grad)
        if not self._input_grad:
            return None, jt.code(weight.shape, weight.dtype, [x, weight, g], cpu_header=_HEADER, cpu_src=src)
        dw, dx = jt.code([weight.shape, x.shape], [weight.dtype, x.dtype], [x, weight, g],
                         cpu_header=_HEADER, cpu_src=src)
        return dx, dw


def conv2d(x, weight, stride, padding, dilation):
    """``F.conv2d(x, weight, None, stride, padding, dilation)`` for float32 NCHW ``x`` and
    one group, with ``stride``, ``padding``, ``dilation`` as (h, w) pairs."""
    return _Conv2d(tuple(stride), tuple(padding), tuple(dilation))(x, weight)
