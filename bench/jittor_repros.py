"""Minimal reproductions of the Jittor 1.3.11 CPU limits found while profiling RT-DETR.

``python -m bench.jittor_repros`` prints, for each, the figures that show it (min of a
few runs, so a busy machine blurs them less). None of these can be fixed in the
project itself; each names what the project does about it.

1. ``threads``: Jittor's own fused CPU kernels are single-threaded (only oneDNN conv
   and matmul use OpenMP): an element-wise op keeps one core busy where torch keeps
   OMP_NUM_THREADS cores busy.
2. ``bmm``: ``jt.matmul`` on 3-D/4-D operands (attention's q @ k^T and attn @ v) is a
   broadcast-multiply-reduce, not oneDNN; its forward is fine but its automatic
   backward is a strided reduction several times slower. A ``jt.Function`` whose
   ``grad`` is again two ``jt.matmul`` calls gives the same numbers faster (the fix
   proposed for ``compat.MultiheadAttention``).
3. ``fastmath``: kernels are compiled with ``-Ofast -march=native``, so a chain of
   element-wise ops fused into one kernel may be contracted (FMA) or re-associated and
   round differently from torch, which rounds every op (the fused deformable attention
   kernel guards its coordinate arithmetic with an asm barrier).
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


class _BatchedMatmul:
    """Factory for the jt.Function (kept lazy so importing this module needs no Jittor)."""

    @staticmethod
    def make(jt):
        class BatchedMatmul(jt.Function):
            def execute(self, a, b):
                self._a, self._b = a, b
                return jt.matmul(a, b)

            def grad(self, g):
                t = lambda v: v.transpose(list(range(v.ndim - 2)) + [v.ndim - 1, v.ndim - 2])  # noqa: E731
                return jt.matmul(g, t(self._b)), jt.matmul(t(self._a), g)
        return BatchedMatmul


def repro_bmm(jt, torch):
    rng = np.random.default_rng(0)
    q, k = (jt.array(rng.random((2, 8, 500, 32), dtype=np.float32)) for _ in range(2))
    bmm = _BatchedMatmul.make(jt)

    def run(fn):
        y = fn(q, k.transpose(0, 1, 3, 2))
        jt.sync(jt.grad((y * y).sum(), [q, k]))

    auto = _min_ms(lambda: run(jt.matmul))
    custom = _min_ms(lambda: run(bmm.apply))
    fwd = _min_ms(lambda: jt.matmul(q, k.transpose(0, 1, 3, 2)).sync())
    tq, tk = (torch.tensor(v.numpy(), requires_grad=True) for v in (q, k))

    def trun():
        y = tq @ tk.transpose(-1, -2)
        (y * y).sum().backward()
    print(f"bmm: (2,8,500,32) @ (2,8,32,500): forward {fwd:.1f} ms; forward+backward: autograd "
          f"{auto:.1f} ms, matmul-backward Function {custom:.1f} ms, torch {_min_ms(trun):.1f} ms")


def repro_fastmath(jt):
    x = np.random.default_rng(0).random(100000, dtype=np.float32)
    jx = jt.array(x)
    out = ((((jx * 2 - 1) + 1) * 80 - 1) / 2).numpy()
    g = x * np.float32(2) - np.float32(1)
    ref = ((g + np.float32(1)) * np.float32(80) - np.float32(1)) / np.float32(2)
    print(f"fastmath: ((2x-1)+1)*80-1)/2 as Jittor ops, float32: {int((out != ref).sum())} of {x.size} "
          f"results differ from step-by-step IEEE rounding (numpy, torch)")


def main(argv=None):
    from rtdetr_jittor._env import jt
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    which = (argv if argv is not None else sys.argv[1:]) or ["threads", "bmm", "fastmath"]
    for name in which:
        {"threads": lambda: repro_threads(jt, torch), "bmm": lambda: repro_bmm(jt, torch),
         "fastmath": lambda: repro_fastmath(jt)}[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
