"""Precision fixes: values and gradients torch computes more accurately than the plain
Jittor ops do (float32 constants in float64 models, naive float32 sums, Jittor's
sigmoid clamp at -30, no ``log1p``), each computed as torch does."""
import math

import numpy as np

from rtdetr_jittor._env import jt

from .semantics import as_var_like
from .ties import minimum


def constant(value, dtype):
    """A one-element Var holding ``value`` in ``dtype`` (a Python float would become a
    float32 constant even in a float64 model)."""
    return jt.array(np.array([value]), dtype=str(dtype))


def sum64(x):
    """Sum of all elements accumulated in float64, returned in ``x``'s dtype (Jittor's
    float32 sum is naive)."""
    return x.float64().sum().astype(x.dtype)


def mean64(x, dim):
    """Mean over ``dim`` accumulated in float64, returned in ``x``'s dtype (a sum and an
    exact division: ``mean``'s backward multiplies by a float32 ``1/n``)."""
    return (x.float64().sum(dim) / x.shape[dim]).astype(x.dtype)


class _Erf(jt.Function):
    def execute(self, x):
        self._x = x
        return jt.erf(x)

    def grad(self, grad_out):
        x = self._x
        return grad_out * constant(2.0 / math.sqrt(math.pi), x.dtype) * jt.exp(-x * x)


def erf(x):
    """torch's ``erf``: its gradient ``2/sqrt(pi) exp(-x^2)`` takes that constant in x's
    dtype (Jittor's erf backward rounds it to float32, 5e-8 relative in a float64 model)."""
    return _Erf()(x)


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
    it: ``((1 - t) * x - logsigmoid(x)) * weight``, gradient ``(sigmoid(x) - t) * weight``
    (the composed Jittor ops give ``-t - 0.5`` instead of ``0.5 - t`` at x == 0 and
    cancel for confident logits)."""
    targets = as_var_like(targets, logits).astype(logits.dtype)
    weight = jt.ones_like(logits) if weight is None else as_var_like(weight, logits).astype(logits.dtype)
    shape = np.broadcast_shapes(tuple(logits.shape), tuple(targets.shape), tuple(weight.shape))
    return _BCEWithLogits.apply(logits.broadcast(shape), targets.broadcast(shape), weight.broadcast(shape))
