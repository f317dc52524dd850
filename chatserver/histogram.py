"""Histograms as plain counters (`Buckets`) and their bucket bounds.

Apart from chatserver.metrics, which exports them, so that what only observes (the stores,
the pools) imports neither aiohttp nor prometheus-client: an admin command that opens the
store starts in a fraction of the time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import cast

QUEUE_BYTES_BUCKETS = (0, 1024, 16384, 65536, 262144, 1048576, 4194304)
DELIVERY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
JOB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               0.5, 1.0, 2.5, 5.0)


def bucket_bound(bound: float) -> str:
    """A bucket bound (`le`) as prometheus-client writes it (imported at the first scrape)."""
    from prometheus_client.utils import floatToGoString

    as_go = cast("Callable[[float], str]", floatToGoString)  # unannotated there
    return as_go(bound)


class Buckets:
    """A histogram as plain counters, exported by the collector at scrape time.

    `observe` is a bisect and two additions, with no lock: each instance is observed from one
    thread only (the event loop, or the SQLite writer thread), and read from the loop.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe_since(self, starts: list[float], now: float) -> None:
        """Observe `now - start` for every start: one call for many observations."""
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for start in starts:
            elapsed = now - start
            counts[bisect_left(bounds, elapsed)] += 1
            total += elapsed
        self.sum += total

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at or below it) for every bound and +Inf, as exposition wants."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((bucket_bound(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out
