"""Named probe points and forced decisions, shared by both twins.

Models call ``probes.record(name, value)`` at points that are not module outputs
(each decoder layer's boxes, the criterion's terms, ...). It costs nothing unless a
recorder is active. At a decision point (top-k selection, matcher assignment) or a
value the harness may need to impose (float32-built constants in a float64 run),
models call ``value = probes.decide(name, value)``: the model's *own* value is
recorded first, then the value the harness forced (if any) is returned for the rest
of the computation. The harness therefore always judges what a twin decided, never
what it was told::

    with probes.recording() as rec:      # rec: ordered list of (name, value)
        model(x)
    with probes.forcing({"decoder.topk_ind": idx}):
        model(x)                         # records the model's own top-k, uses idx
"""
import contextlib

_recorder = None
_forced = {}


def record(name, value):
    """Hand ``value`` to the active recorder, if any."""
    if _recorder is not None:
        _recorder(name, value)


def decide(name, value):
    """Record the model's own ``value`` for ``name``, then return the forced value if
    the harness set one, else ``value``. A callable forced value is called with
    ``value`` (for decisions taken repeatedly, such as the matcher's, once per head)."""
    record(name, value)
    if name not in _forced:
        return value
    forced = _forced[name]
    return forced(value) if callable(forced) else forced


@contextlib.contextmanager
def recording(callback=None):
    """Record every probe inside the block; yields the list of ``(name, value)``."""
    global _recorder
    records = []
    previous = _recorder
    _recorder = callback or (lambda name, value: records.append((name, value)))
    try:
        yield records
    finally:
        _recorder = previous


@contextlib.contextmanager
def forcing(values):
    """Force the named decisions inside the block."""
    global _forced
    previous = _forced
    _forced = {**previous, **values}
    try:
        yield
    finally:
        _forced = previous
