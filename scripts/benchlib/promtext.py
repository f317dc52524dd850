"""Reading a server's Prometheus text (`GET /metrics`): samples, and a histogram's percentiles
between two scrapes. Values in, values out."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value. Comment lines are skipped."""
    out: Samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def buckets(samples: Samples, histogram: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound (`+Inf` as math.inf)."""
    out = {}
    for (name, labels), count in samples.items():
        if name == f"{histogram}_bucket":
            le = dict(labels).get("le", "")
            out[math.inf if le == "+Inf" else float(le)] = count
    return dict(sorted(out.items()))


def delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Bucket counts observed between two scrapes of the same process."""
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def percentile_bound(cumulative: Mapping[float, float], pct: float) -> float | None:
    """The upper bound of the bucket the `pct` percentile falls in (nearest rank); None
    without samples. A histogram only knows that much: the value is at most this bound."""
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = max(1, math.ceil(pct / 100.0 * total))
    return next(le for le, count in sorted(cumulative.items()) if count >= rank)


def highest_bound(cumulative: Mapping[float, float]) -> float | None:
    """The upper bound of the highest bucket with a sample in it: the max is at most this."""
    previous = 0.0
    found = None
    for le, count in sorted(cumulative.items()):
        if count > previous:
            found = le
        previous = count
    return found
