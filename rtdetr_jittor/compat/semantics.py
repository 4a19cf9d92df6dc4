"""torch's tensor semantics where Jittor's differ: out-of-place detach, int64 indices
from top-k and argmax, torch's ``max(dim).values``, floor division, and the conversions
of values that cross frameworks (forced decisions, targets)."""
import numpy as np

from rtdetr_jittor._env import jt


def detach(x):
    """Out-of-place detach: a new Var with no gradient path; ``x`` is untouched
    (``Var.stop_grad()`` works in place and cuts earlier uses of ``x`` too)."""
    return x.detach()


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
    """Floor division with Python/torch semantics for negative operands (exact for
    integers; Jittor's ``//`` truncates toward zero)."""
    if not isinstance(a, jt.Var):
        return a // b
    if a.dtype.is_float() or isinstance(b, float) or (isinstance(b, jt.Var) and b.dtype.is_float()):
        return jt.floor(a / b)
    q = a // b  # integer division truncates toward zero; step down where the remainder's sign differs from b's
    r = a - q * b
    wrong_sign = ((r < 0) != (b < 0)) if isinstance(b, jt.Var) else ((r > 0) if b < 0 else (r < 0))
    return q - (wrong_sign & (r != 0)).astype(q.dtype)


def to_numpy(value):
    """A NumPy array from a Var, a torch tensor or anything array-like (forced decisions,
    targets handed over from either framework)."""
    if isinstance(value, jt.Var):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_var_like(value, like):
    """``value`` itself if it is a Var, else a Var of it in ``like``'s dtype."""
    return value if isinstance(value, jt.Var) else jt.array(np.asarray(value, dtype=str(like.dtype)))
