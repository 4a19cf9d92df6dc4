"""Gate verdicts as lists of named threshold checks.

Every gate result carries ``checks``: one entry per threshold with the measured
``value``, the comparison ``op``, the ``limit`` and ``passed``; the gate passes when
all of them do. ``failures`` turns the failed ones into sentences that say which
threshold failed and by how much.
"""
import math
import operator

OPS = {"<=": operator.le, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


def check(name, value, op, limit):
    """One threshold check; a NaN or missing value fails."""
    bad_number = isinstance(value, float) and not math.isfinite(value)
    passed = value is not None and not bad_number and OPS[op](value, limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "passed": bool(passed)}


def verdict(result, checks):
    """``result`` with its ``checks`` and ``passed`` (all checks passed) set."""
    result["checks"] = checks
    result["passed"] = bool(checks) and all(c["passed"] for c in checks)
    return result


def _describe(c):
    text = f"{c['name']} = {c['value']!r} (needs {c['op']} {c['limit']!r}"
    if isinstance(c["value"], (int, float)) and isinstance(c["limit"], (int, float)) and c["op"] != "==":
        text += f"; off by {abs(c['value'] - c['limit']):.3g}"
    return text + ")"


def failures(result):
    """Why ``result`` failed, one line per failed threshold (or its error), then the
    content problems it lists, if any."""
    if "error" in result:
        return [f"raised {result['error']}"]
    return [_describe(c) for c in result.get("checks", []) if not c["passed"]] + list(result.get("problems", []))


def report(result):
    """One line for an assertion message: every failed threshold of ``result``."""
    return "; ".join(failures(result))
