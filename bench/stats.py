"""Summary statistics of repeated timings (median and spread, no assumptions on shape)."""
import numpy as np


def summarize(times_ms):
    """``{n, median_ms, q1_ms, q3_ms, iqr_ms, min_ms, max_ms, mean_ms}`` (None when empty)."""
    t = np.asarray([x for x in times_ms if x is not None], dtype=np.float64)
    if t.size == 0:
        return {"n": 0, "median_ms": None, "q1_ms": None, "q3_ms": None, "iqr_ms": None,
                "min_ms": None, "max_ms": None, "mean_ms": None}
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"n": int(t.size), "median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3),
            "iqr_ms": float(q3 - q1), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "mean_ms": float(t.mean())}


def ratio(numerator, denominator):
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)
