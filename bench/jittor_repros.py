"""Minimal reproductions of the Jittor 1.3.11 CPU limits found while profiling RT-DETR.

``python -m bench.jittor_repros`` prints, for each, the figures that show it (min of a
few runs, so a busy machine blurs them less). None of these can be fixed in the
project itself; each names what the project does about it.

1. ``threads``: Jittor's own fused CPU kernels are single-threaded (only oneDNN conv
   and matmul use OpenMP): an element-wise op keeps one core busy where torch keeps
   OMP_NUM_THREADS cores busy.
2. ``bmm``: ``jt.matmul`` on 3-D/4-D operands (attention's q @ k^T and attn @ v) is a
   single-threaded broadcast-multiply-reduce, not oneDNN, and its automatic backward is
   a strided reduction several times slower still. The project's answer is
   ``compat.bmm``: one ``jt.code`` kernel per product, forward and backward, calling
   oneDNN's sgemm per matrix in float32 (used by ``compat.MultiheadAttention``); the
   repro prints all three.
3. ``batchnorm``: training-mode batch statistics written as Jittor ops (float64 sums,
   as torch accumulates in double on CPU) run as several single-threaded fused
   reductions, forward and backward. The project's answer is ``compat.BatchNorm2d``'s
   two OpenMP kernels (``RTDETR_JITTOR_BN=ops`` restores the composed ops); the repro
   times both against torch.
4. ``fastmath``: kernels are compiled with ``-Ofast -march=native``, so a chain of
   element-wise ops fused into one kernel may be contracted (FMA) or re-associated and
   round differently from torch, which rounds every op (the fused deformable attention
   kernel guards its coordinate arithmetic with an asm barrier; the max-pool kernel
   recognises NaN by its bits, as ``-Ofast`` folds ``isnan`` to false).
5. ``parallel``: Jittor's own CPU parallelisation of fused kernels (the loop option
   ``compile_options={"parallel": 1}``) starts 32 OpenMP threads whatever
   OMP_NUM_THREADS says and sums reductions with atomics (order, hence float32 results,
   vary from run to run); on 2 cores it is several times slower than one thread, so the
   project writes its own OpenMP kernels (``rtdetr_jittor/compat/kernels``).
6. ``pointwise``: a 1x1 convolution goes to oneDNN's convolution primitive, which
   reorders input, weights and output to its blocked layout on every call; the same
   product as a matrix multiplication on the NCHW data is faster without gradients.
   ``compat.Conv2d`` runs the product in that case (with gradients, ``kernels.conv2d``).
7. ``relu``: ``nn.relu`` is a one-thread ternary each way; where its output feeds both a
   convolution and a residual sum (every ResNet block), the backward cannot fuse it away.
   ``compat.ReLU`` runs an OpenMP kernel each way in training.
8. ``silu``: Jittor fuses every element-wise op between two convolutions into one
   single-threaded kernel; one with many inputs (the end of the encoder's CSPRepLayer:
   three eval batch norms, a sum and two SiLUs, 15 input arrays) runs many times slower
   per element than the same ops with fewer inputs. ``compat.SiLU`` is a kernel of its
   own (vectorised ``exp``, OpenMP), which splits such a chain in two short ones.
9. ``conv``: Jittor's oneDNN convolution binding asks for ``forward_inference`` (an NHWC
   kernel whose output goes back to NCHW through a dearer reorder), runs the input and
   weight gradients as two ops that each reorder the output gradient, and computes an
   input gradient for every input. ``compat.Conv2d`` calls oneDNN as PyTorch does
   (``kernels/conv.py``: ``forward_training``, one backward call for both gradients,
   none for an input without gradient); the repro times both, forward+backward, and the
   difference to torch's ``conv2d``.
"""
import os
import sys
import time

import numpy as np


def _min_ms(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def _cpu_per_wall(fn, repeats=5):
    """Process CPU seconds per wall second while ``fn`` runs: about the number of busy cores."""
    fn()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / max(time.perf_counter() - t0, 1e-9)


def repro_threads(jt, torch):
    x = np.random.rand(8, 64, 160, 160).astype(np.float32)
    jx, tx = jt.array(x), torch.from_numpy(x)
    j = _cpu_per_wall(lambda: (jt.exp(jx) * 2 + 1).sync())
    t = _cpu_per_wall(lambda: torch.exp(tx) * 2 + 1)
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, exp(x)*2+1 on 13M floats, "
          f"cores busy (CPU time / wall time): jittor {j:.2f}, torch {t:.2f} (torch threads {torch.get_num_threads()})")


def repro_bmm(jt, torch):
    from rtdetr_jittor import compat
    rng = np.random.default_rng(0)
    q, k = (jt.array(rng.random((16, 500, 32), dtype=np.float32)) for _ in range(2))

    def run(fn):
        y = fn(q, k)
        jt.sync(jt.grad((y * y).sum(), [q, k]))

    auto = _min_ms(lambda: run(lambda a, b: jt.matmul(a, b.transpose(0, 2, 1))))
    kernel = _min_ms(lambda: run(lambda a, b: compat.bmm(a, b, transpose_b=True)))
    fwd = _min_ms(lambda: jt.matmul(q, k.transpose(0, 2, 1)).sync())
    tq, tk = (torch.tensor(v.numpy(), requires_grad=True) for v in (q, k))

    def trun():
        y = tq @ tk.transpose(-1, -2)
        (y * y).sum().backward()
    print(f"bmm: (16,500,32) @ (16,32,500): jt.matmul forward {fwd:.1f} ms; forward+backward: jt.matmul "
          f"{auto:.1f} ms, compat.bmm {kernel:.1f} ms, torch {_min_ms(trun):.1f} ms")


def repro_batchnorm(jt, torch):
    from rtdetr_jittor import compat
    rng = np.random.default_rng(0)
    x = (3 + rng.standard_normal((2, 64, 160, 160))).astype(np.float32)

    def run(mode):
        os.environ["RTDETR_JITTOR_BN"] = mode
        bn = compat.BatchNorm2d(64)
        jx = jt.array(x)
        y = bn(jx)
        jt.sync(jt.grad((y * y).sum(), [jx, bn.weight, bn.bias]) + [bn.running_mean])
    ops, fused = _min_ms(lambda: run("ops"), 3), _min_ms(lambda: run("fused"), 3)
    os.environ.pop("RTDETR_JITTOR_BN", None)
    tbn, tx = torch.nn.BatchNorm2d(64), torch.tensor(x, requires_grad=True)

    def trun():
        (tbn(tx) ** 2).sum().backward()
    print(f"batchnorm: training forward+backward on (2,64,160,160): Jittor ops (float64 statistics) "
          f"{ops:.1f} ms, compat kernels {fused:.1f} ms, torch {_min_ms(trun, 3):.1f} ms")


def repro_fastmath(jt):
    x = np.random.default_rng(0).random(100000, dtype=np.float32)
    jx = jt.array(x)
    out = ((((jx * 2 - 1) + 1) * 80 - 1) / 2).numpy()
    g = x * np.float32(2) - np.float32(1)
    ref = ((g + np.float32(1)) * np.float32(80) - np.float32(1)) / np.float32(2)
    print(f"fastmath: ((2x-1)+1)*80-1)/2 as Jittor ops, float32: {int((out != ref).sum())} of {x.size} "
          f"results differ from step-by-step IEEE rounding (numpy, torch)")


def repro_parallel(jt):
    x = jt.array(np.random.rand(8, 64, 160, 160).astype(np.float32))
    plain = _min_ms(lambda: (jt.exp(x) * 2 + 1).sync())
    saved = jt.flags.compile_options
    jt.flags.compile_options = {"parallel": 1}
    try:
        parallel = _min_ms(lambda: (jt.exp(x) * 2 + 1).sync())
        busy = _cpu_per_wall(lambda: (jt.exp(x) * 2 + 1).sync())
    finally:
        jt.flags.compile_options = saved
    print(f"parallel: exp(x)*2+1 on 13M floats: one thread {plain:.1f} ms; compile_options parallel=1 "
          f"{parallel:.1f} ms with {busy:.2f} cores busy (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")


def repro_pointwise(jt):
    from rtdetr_jittor import compat
    nn = jt.nn
    x = jt.array(np.random.default_rng(0).random((1, 512, 80, 80), dtype=np.float32))
    plain, product = nn.Conv2d(512, 128, 1, bias=False), compat.Conv2d(512, 128, 1, bias=False)
    product.weight.assign(plain.weight)
    with jt.no_grad():
        conv_ms = _min_ms(lambda: plain(x).sync())
        product_ms = _min_ms(lambda: product(x).sync())
        diff = float(np.abs(plain(x).numpy() - product(x).numpy()).max())
    print(f"pointwise: (1,512,80,80) -> 128 channels, 1x1 forward: oneDNN convolution {conv_ms:.1f} ms, "
          f"matrix product (compat.Conv2d) {product_ms:.1f} ms (max |difference| {diff:.1e})")


def repro_relu(jt):
    from rtdetr_jittor import compat
    nn = jt.nn
    rng = np.random.default_rng(0)
    x = jt.array(rng.standard_normal((2, 64, 160, 160)).astype(np.float32))
    g = jt.array(rng.standard_normal((2, 64, 160, 160)).astype(np.float32))
    bn, conv = compat.BatchNorm2d(64), nn.Conv2d(64, 64, 3, padding=1, bias=False)
    module = compat.ReLU()
    module.train()

    def block(act):  # a ResNet basic block's pattern: the ReLU's output feeds a conv and the shortcut
        a = act(bn(x))
        y = act(conv(a) + a)
        jt.sync(jt.grad((y * g).sum(), [x, conv.weight]))
    print(f"relu: residual block on (2,64,160,160), forward+backward: nn.relu {_min_ms(lambda: block(nn.relu)):.1f} ms, "
          f"compat.ReLU {_min_ms(lambda: block(module)):.1f} ms")


def repro_silu(jt):
    from rtdetr_jittor import compat
    nn = jt.nn
    rng = np.random.default_rng(0)
    a, b, c = (jt.array(rng.standard_normal((1, 128, 80, 80)).astype(np.float32)) for _ in range(3))
    bn1, bn2, bn3 = (compat.BatchNorm2d(128) for _ in range(3))
    for bn in (bn1, bn2, bn3):
        bn.running_var.assign(jt.array(rng.uniform(0.5, 2.0, 128).astype(np.float32)))
        bn.eval()
    module = compat.SiLU()

    def csp(act):  # the end of the encoder's CSPRepLayer: two branches, three eval batch norms
        return lambda: (act(bn1(a) + bn2(b)) + act(bn3(c))).sync()
    with jt.no_grad():
        print(f"silu: eval batch norms + SiLU on (1,128,80,80) maps: one batch norm + nn.silu "
              f"{_min_ms(lambda: nn.silu(bn1(a)).sync()):.2f} ms; three batch norms summed, no SiLU "
              f"{_min_ms(lambda: (bn1(a) + bn2(b) + bn3(c)).sync()):.2f} ms; CSP pattern with nn.silu "
              f"{_min_ms(csp(nn.silu)):.2f} ms, with compat.SiLU {_min_ms(csp(module)):.2f} ms")


def repro_conv(jt, torch):
    from rtdetr_jittor.compat.kernels.conv import conv2d
    rng = np.random.default_rng(0)
    for n, c, o, size in ((2, 32, 64, 320), (2, 128, 128, 80)):
        x = rng.standard_normal((n, c, size, size)).astype(np.float32)
        w = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        g = rng.standard_normal((n, o, size, size)).astype(np.float32)
        jx, jw, jg = jt.array(x), jt.array(w), jt.array(g)

        def step(conv):
            return lambda: jt.sync(jt.grad((conv(jx, jw) * jg).sum(), [jx, jw]))
        jittor_conv = lambda a, b: jt.nn.conv2d(a, b, None, 1, 1)  # noqa: E731
        kernel_conv = lambda a, b: conv2d(a, b, (1, 1), (1, 1), (1, 1))  # noqa: E731
        with torch.no_grad():
            ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, 1, 1).numpy()
        diffs = [float(np.abs(f(jx, jw).numpy() - ref).max()) for f in (jittor_conv, kernel_conv)]
        print(f"conv: ({n},{c},{size},{size}) -> {o} channels, 3x3, forward+backward: Jittor's binding "
              f"{_min_ms(step(jittor_conv)):.1f} ms, kernels.conv2d {_min_ms(step(kernel_conv)):.1f} ms; "
              f"max |difference| to torch's conv2d {diffs[0]:.1e} and {diffs[1]:.1e}")


def main(argv=None):
    from rtdetr_jittor._env import jt
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    repros = {"threads": lambda: repro_threads(jt, torch), "bmm": lambda: repro_bmm(jt, torch),
              "batchnorm": lambda: repro_batchnorm(jt, torch), "fastmath": lambda: repro_fastmath(jt),
              "parallel": lambda: repro_parallel(jt), "pointwise": lambda: repro_pointwise(jt),
              "relu": lambda: repro_relu(jt), "silu": lambda: repro_silu(jt), "conv": lambda: repro_conv(jt, torch)}
    for name in (argv if argv is not None else sys.argv[1:]) or list(repros):
        repros[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
