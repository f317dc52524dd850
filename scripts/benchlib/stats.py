"""Percentiles and other small numeric helpers; values in, values out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 for an empty one).

    Nearest-rank rather than interpolation: every reported number is a latency that happened.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize_ns(samples: Iterable[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of nanosecond samples, plus the count."""
    values = sorted(samples)
    ms = 1e-6
    return {
        "count": float(len(values)),
        "p50": percentile(values, 50) * ms,
        "p90": percentile(values, 90) * ms,
        "p99": percentile(values, 99) * ms,
        "max": (values[-1] if values else 0) * ms,
        "mean": (sum(values) / len(values) if values else 0) * ms,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
