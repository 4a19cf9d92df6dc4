"""The decision points of the model and how the reference's decisions are forced on the twin.

A decision point is a discrete choice (top-k query selection, matcher assignment) or a
tensor the official model builds in float32 whatever the model's dtype. Both twins
call ``probes.decide`` there, which records the twin's *own* value before returning
the forced one, so forcing never hides a wrong decision: the judge sees the own value.
"""
import re

# Top-k selections and the scores they select by, for tie-aware judging.
TOPK_SCORES = {
    "decoder.topk_ind": ("decoder.enc_outputs_class", lambda v: v.max(-1)),
    "postprocessor.topk_index": ("postprocessor.flat_scores", lambda v: v),
}

# Tensors the official model builds in float32 whatever the model's dtype (position
# embedding, anchors, noised denoising boxes: float32 sin/cos/log, where Jittor and torch
# differ by an ulp or two). A float64 comparison records the twin's own value (judged
# at float32 level) and then takes the reference's, so that those ulps do not show as
# 1e-7 errors in a float64 model.
FLOAT32_CONSTANTS = ("encoder.pos_embed", "decoder.anchors", "decoder.dn.input_query_bbox")

MATCHER_RECORD = re.compile(r"^probe:matcher\.indices(#\d+)?\.(\d+)\.([01])$")


class ForcedSequence:
    """A forced value that differs per call (the matcher runs once per output head; a
    constant is built once per training step). A callable value is called with the
    twin's own value."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, default):
        if self.calls >= len(self.values):
            raise RuntimeError("the twin took more decisions at this point than the reference")
        value = self.values[self.calls]
        self.calls += 1
        return value(default) if callable(value) else value


def as_tensor_of(backend, value):
    """A forced constant, made a tensor of ``backend``'s framework when it is taken."""
    return lambda default: backend.from_numpy(value)


def forced_decisions(ref_capture, backend, force_topk, force_matcher, force_constants=False):
    """``{decision point: forced value}`` from the reference's capture, for a model of ``backend``."""
    by = ref_capture.by_name()
    forced = {}
    for name in FLOAT32_CONSTANTS if force_constants else ():
        if f"probe:{name}" in by:
            forced[name] = as_tensor_of(backend, by[f"probe:{name}"].value)
    if force_topk:
        for probe in TOPK_SCORES:
            if f"probe:{probe}" in by:
                forced[probe] = by[f"probe:{probe}"].value
    if force_matcher:
        calls = {}
        for r in ref_capture.records:
            m = MATCHER_RECORD.match(r.name)
            if m:
                per_image = calls.setdefault(m.group(1) or "", {})
                per_image.setdefault(int(m.group(2)), [None, None])[int(m.group(3))] = r.value
        ordered = [calls[k] for k in sorted(calls, key=lambda c: int(c[1:]) if c else 0)]
        forced["matcher.indices"] = ForcedSequence(
            [[tuple(per_image[i]) for i in sorted(per_image)] for per_image in ordered])
    return forced
