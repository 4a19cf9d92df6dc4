"""Shared hypothesis strategies.

Importing Jittor loads code compiled with -ffast-math, which sets the processor's
flush-to-zero mode for the whole process; hypothesis then refuses to generate
subnormal floats. ``st_floats`` is ``st.floats`` without subnormals, so float
strategies work in any test order.
"""
import functools

from hypothesis import strategies as st

st_floats = functools.partial(st.floats, allow_subnormal=False)


# --- whole-model parity cases (parity.cases.Case) ------------------------------------
# Sizes are multiples of 32 (the backbone's stride); 64 px is the smallest at which the
# small config's three feature levels offer more anchors (84) than its 30 queries.
SIDES = (64, 96, 128)


@st.composite
def st_box(draw, kind=None):
    """One normalised cxcywh box: ordinary, tiny (under a pixel at 64 px), touching a
    border, or covering almost the whole image."""
    kind = kind or draw(st.sampled_from(("ordinary", "tiny", "border", "huge")))
    if kind == "tiny":
        w, h = draw(st_floats(1e-3, 1e-2)), draw(st_floats(1e-3, 1e-2))
    elif kind == "huge":
        w, h = draw(st_floats(0.9, 1.0)), draw(st_floats(0.9, 1.0))
    else:
        w, h = draw(st_floats(0.05, 0.6)), draw(st_floats(0.05, 0.6))
    if kind == "border":
        cx = draw(st.sampled_from((w / 2, 1 - w / 2)))
        cy = draw(st_floats(h / 2, 1 - h / 2))
    else:
        cx, cy = draw(st_floats(w / 2, 1 - w / 2)), draw(st_floats(h / 2, 1 - h / 2))
    return [float(cx), float(cy), float(w), float(h)]


@st.composite
def st_image_targets(draw, num_classes, max_boxes=6):
    """Ground truth of one image: 0 to ``max_boxes`` boxes of every kind, duplicates
    included, labels over the whole class range."""
    boxes = draw(st.lists(st_box(), min_size=0, max_size=max_boxes))
    if boxes and draw(st.booleans()):
        boxes.append(list(draw(st.sampled_from(boxes))))  # an exact duplicate
    labels = [draw(st.integers(0, num_classes - 1)) for _ in boxes]
    return {"labels": labels, "boxes": boxes}


@st.composite
def st_case(draw, config, num_classes, mode, dtype, max_batch=3, multi_scale=True):
    """A :class:`parity.cases.Case`: height and width drawn independently, batch 1 to
    ``max_batch``, per-image ground truth (empty images and an empty batch included),
    and for training the multi-scale resize on or off."""
    from parity.cases import Case
    batch = draw(st.integers(1, max_batch))
    targets = None
    if mode != "eval":
        targets = draw(st.lists(st_image_targets(num_classes), min_size=batch, max_size=batch))
    scales = None
    if mode != "eval" and multi_scale and draw(st.booleans()):
        scales = draw(st.lists(st.sampled_from(SIDES), min_size=1, max_size=2, unique=True))
    return Case(config=config, mode=mode, dtype=dtype, height=draw(st.sampled_from(SIDES)),
                width=draw(st.sampled_from(SIDES)), batch=batch, seed=draw(st.integers(0, 2 ** 16)),
                targets=targets, multi_scale=scales, steps=2)


# --- boundary fuzzing (annotation files, checkpoints) --------------------------------
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
