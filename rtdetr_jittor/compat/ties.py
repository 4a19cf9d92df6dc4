"""torch's gradients where two operands tie: ``clamp`` at its bounds, ``maximum`` /
``minimum`` of equal values, ``abs`` at zero (identical or touching boxes in the box
ops, matched boxes in the L1 loss and cost)."""
import numpy as np

from rtdetr_jittor._env import jt

from .semantics import as_var_like


def clamp(x, min=None, max=None):
    """``torch.clamp`` with torch's gradient: 1 where min <= x <= max, bounds included
    (Jittor gives 0 at the bounds)."""
    out = x
    if min is not None:
        out = jt.where(out < min, jt.full_like(out, min), out)
    if max is not None:
        out = jt.where(out > max, jt.full_like(out, max), out)
    return out


def _broadcast_pair(a, b):
    """Both as Vars of the broadcast shape (``jt.where`` does not broadcast zero-size)."""
    b = as_var_like(b, a)
    a = as_var_like(a, b)
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
