"""Shared hypothesis strategies.

Importing Jittor loads code compiled with -ffast-math, which sets the processor's
flush-to-zero mode for the whole process; hypothesis then refuses to generate
subnormal floats. ``st_floats`` is ``st.floats`` without subnormals, so float
strategies work in any test order.
"""
import functools

from hypothesis import strategies as st

st_floats = functools.partial(st.floats, allow_subnormal=False)

# Any JSON value: scalars (finite floats), nested lists and objects.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st_floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)

# JSON values that are none of: an integer, a number, a string, a list of four numbers.
wrong_typed_values = st.none() | st.lists(st.text(max_size=3), min_size=1, max_size=4) | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)


@st.composite
def cut_points(draw, data):
    """A length to cut ``data`` to: anything from nothing to one byte short."""
    return draw(st.integers(0, len(data) - 1))
