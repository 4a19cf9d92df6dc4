"""Shared hypothesis strategies.

Importing Jittor loads code compiled with -ffast-math, which sets the processor's
flush-to-zero mode for the whole process; hypothesis then refuses to generate
subnormal floats. ``st_floats`` is ``st.floats`` without subnormals, so float
strategies work in any test order.
"""
import functools

from hypothesis import strategies as st

st_floats = functools.partial(st.floats, allow_subnormal=False)
