"""Judging captures: every tensor of the reference against the twin's, with the
tolerance registry and the reference's per-element noise floor.

Works the same on captures in memory and on captures read back from disk
(``parity.store``), so a saved run can be judged again under another tolerance file.
"""
import fnmatch

import numpy as np

from .compare import Result, compare_assignment, compare_topk_selection
from .decisions import MATCHER_RECORD, TOPK_SCORES

# Module outputs that only one framework's hooks can see; they are left out of the
# comparison (their consumers' outputs are compared), each with the reason.
UNPAIRED_MODULES = {
    "*.self_attn.out_proj": "torch's MultiheadAttention applies out_proj functionally, so no torch hook fires",
    "*.short.pool.layer": "Jittor's AvgPool2d wraps an internal Pool module that torch does not have",
}


def judge_captures(ref_cap, jt_cap, registry, floors=None):
    """Judge every tensor of the reference capture against the twin's, in execution order.
    ``floors``: a mapping ``{name: per-element noise floor}`` (float32 runs), see
    :func:`noise_floors`."""
    jt_by = jt_cap.by_name()
    ref_by = ref_cap.by_name()
    floors = floors if floors is not None else {}
    results, done = [], set()
    for rec in ref_cap.records:
        if rec.name in done:
            continue
        done.add(rec.name)
        other = jt_by.get(rec.name)
        if other is None:
            results.append(Result(rec.name, "missing", {"tol_ratio": float("inf")}, False,
                                  note="recorded by the reference, not by the Jittor twin"))
            continue
        if rec.name[len("probe:"):] in TOPK_SCORES:
            score_name, reduce = TOPK_SCORES[rec.name[len("probe:"):]]
            scores = ref_by.get(f"probe:{score_name}")
            score_values = reduce(scores.value) if scores is not None else None
            res = compare_topk_selection(rec.value, other.value, score_values, atol=1e-6, name=rec.name)
        elif rec.kind == "no-gradient" or other.kind == "no-gradient":
            # Jittor returns zeros for a parameter the loss does not reach; torch returns
            # None there, or zeros where the path exists but carries nothing (empty targets).
            present = other if rec.kind == "no-gradient" else rec
            both = rec.kind == other.kind or not np.any(present.value)
            res = Result(rec.name, "gradient-presence", {"tol_ratio": 0.0 if both else float("inf")}, both,
                         rule="gradient presence",
                         note="" if both else ("no gradient in the reference only" if rec.kind == "no-gradient"
                                               else "no gradient in the Jittor twin only"))
        elif MATCHER_RECORD.match(rec.name) and rec.name.endswith(".0"):
            call, image = MATCHER_RECORD.match(rec.name).group(1) or "", MATCHER_RECORD.match(rec.name).group(2)
            cols_name = rec.name[:-1] + "1"
            cost = ref_by.get(f"probe:matcher.cost{call}.{image}")
            res = compare_assignment(rec.value, ref_by[cols_name].value, other.value, jt_by[cols_name].value,
                                     cost.value if cost is not None else None, atol=1e-5, name=rec.name[:-2])
            done.add(cols_name)
        else:
            ref_value, test_value = rec.value, other.value
            if test_value.shape != ref_value.shape and test_value.size == ref_value.size == 1:
                test_value = test_value.reshape(ref_value.shape)  # Jittor has no 0-d tensors
            res = registry.judge(rec.name, ref_value, test_value, floor=floors.get(rec.name))
        results.append(res)
    for name in jt_by:
        if name not in ref_by and not any(fnmatch.fnmatchcase(name, p) for p in UNPAIRED_MODULES):
            results.append(Result(name, "missing", {"tol_ratio": float("inf")}, False,
                                  note="recorded by the Jittor twin, not by the reference"))
    return gradients_follow_forward(results)


def gradients_follow_forward(results):
    """Every gradient depends on the whole forward pass downstream of its parameter, and
    a kink flip (a ReLU input or a sampling point within rounding of its edge) moves a
    gradient where no floor run can predict it. So when any forward tensor is not
    judgeable in float32, no gradient is: its float64 verdict decides."""
    unjudged = [r.name for r in results if r.verdict == "not judgeable" and not r.name.startswith("grad:")]
    if not unjudged:
        return results
    for r in results:
        if r.name.startswith("grad:") and r.kind == "floor":
            r.passed, r.judgeable = False, False
            r.note = (f"not judgeable in float32: {len(unjudged)} forward tensor(s) are not (first {unjudged[0]}), "
                      f"and every gradient depends on the forward pass; the float64 verdict decides"
                      + (f" (beyond its floor allowance {r.metrics.get('tol_ratio', 0):.3g}x)"
                         if r.metrics.get("n_outside") else ""))
    return results


def noise_floors(ref_cap, floor_caps):
    """Yield ``(name, per-element max over the perturbed runs of |ref - perturbed|)``
    (float32), one float tensor at a time; non-finite differences count as 0 (a tensor
    non-finite in the reference is judged by where its non-finite values sit, not by a
    floor). Holds one tensor's arrays at a time, so it works on stored captures."""
    others = [c.by_name() for c in floor_caps]
    for rec in ref_cap.records:
        if rec.kind == "no-gradient":
            continue
        ref_value, floor = None, None
        for other in others:
            o = other.get(rec.name)
            if o is None or o.kind == "no-gradient":
                continue
            ref_value = rec.value if ref_value is None else ref_value
            value = o.value
            if ref_value.dtype.kind != "f" or value.shape != ref_value.shape:
                continue
            diff = np.abs(ref_value.astype(np.float64) - value.astype(np.float64))
            diff = np.where(np.isfinite(diff), diff, 0.0).astype(np.float32)
            floor = diff if floor is None else np.maximum(floor, diff)
        if floor is not None:
            yield rec.name, floor
