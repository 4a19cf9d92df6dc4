"""Named probe points and forced decisions, shared by both twins.

Models call ``probes.record(name, value)`` at points that are not module outputs
(encoder top-k indices, each decoder layer's boxes, matcher indices, ...). It costs
nothing unless a recorder is active. ``probes.override(name, value)`` returns a
forced value when the harness has set one, so a discrete decision taken by one
framework (top-k selection, matcher assignment) can be imposed on the other::

    with probes.recording() as rec:      # rec: ordered list of (name, value)
        model(x)
    with probes.forcing({"decoder.topk_ind": idx}):
        model(x)
"""
import contextlib

_recorder = None
_forced = {}


def record(name, value):
    """Hand ``value`` to the active recorder, if any."""
    if _recorder is not None:
        _recorder(name, value)


def is_recording():
    """True while a recorder is active (lets callers skip work done only for probes)."""
    return _recorder is not None


def override(name, value):
    """The forced value for ``name`` if the harness set one, else ``value``.
    A callable forced value is called with ``value`` (for decisions taken repeatedly,
    such as the matcher's, once per output head)."""
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
