"""Loading a state_dict with torch's strictness: Jittor's ``load_state_dict`` never
raises; ``load_state_dict_checked`` fails on missing, unexpected or mis-shaped keys
before loading anything."""
import numpy as np

from rtdetr_jittor._env import jt
from rtdetr_common.checkpoint_io import StateDictError

from .semantics import to_numpy


def load_state_dict_checked(module, state_dict, strict=True):
    """Load ``state_dict`` (name -> numpy/Var/tensor) into ``module``; report problems.

    Returns ``{"missing": [...], "unexpected": [...], "mismatched": [(k, want, got)]}``.
    With ``strict`` any problem raises ``StateDictError`` before anything is loaded.
    A 0-d value loads into a shape-[1] Var (Jittor has no 0-d tensors).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = []
    for k, var in own.items():
        if k in state_dict:
            got = tuple(np.shape(to_numpy(state_dict[k])))
            want = tuple(var.shape)
            if got != want and not (want == (1,) and got == ()):
                mismatched.append((k, want, got))
    problems = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        raise StateDictError(describe_state_dict_problems(problems))
    for k, var in own.items():
        if k in state_dict and not any(m[0] == k for m in mismatched):
            value = to_numpy(state_dict[k]).astype(str(var.dtype), copy=False).reshape(var.shape)
            var.update(jt.array(value, dtype=str(var.dtype)))
    return problems


def describe_state_dict_problems(problems, limit=10):
    """One readable paragraph naming missing, unexpected and mis-shaped keys."""
    lines = []
    for label in ("missing", "unexpected"):
        keys = problems[label]
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            lines.append(f"{len(keys)} {label} key(s): {', '.join(map(repr, keys[:limit]))}{more}")
    if problems["mismatched"]:
        shown = "; ".join(f"{k}: model {w} vs checkpoint {g}" for k, w, g in problems["mismatched"][:limit])
        lines.append(f"{len(problems['mismatched'])} mis-shaped key(s): {shown}")
    return "state_dict does not match the model: " + " | ".join(lines)
