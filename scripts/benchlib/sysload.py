"""Whole-machine CPU use from /proc/stat, to tell a clean measurement from a contaminated one.

On a 2-core box anything else running (a test suite, a build) steals time from the pinned
server or generator and silently inflates latency. The run therefore reports how much CPU was
used by everything that is neither the server nor the generator, and warns when it is high.
"""

from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK")

CpuTimes = dict[str, tuple[float, float, float]]  # "cpu0" -> (busy, total, softirq) seconds


def read() -> CpuTimes:
    """Busy and total seconds per CPU since boot (busy = everything but idle and iowait)."""
    out: CpuTimes = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            out[name] = ((sum(ticks) - idle) / _TICK, sum(ticks) / _TICK, ticks[6] / _TICK)
    return out


def busy_seconds(before: CpuTimes, after: CpuTimes) -> float:
    """CPU-seconds of work done on the whole machine between two readings."""
    return sum(after[c][0] - before[c][0] for c in after if c in before)


def softirq_seconds(before: CpuTimes, after: CpuTimes) -> float:
    """CPU-seconds of softirq (loopback TCP delivery, mostly) between two readings.

    The kernel may charge it to no process at all, so it is reported on its own.
    """
    return sum(after[c][2] - before[c][2] for c in after if c in before)


def per_cpu_pct(before: CpuTimes, after: CpuTimes) -> dict[str, float]:
    """Busy % of each CPU between two readings."""
    pct = {}
    for c in after:
        if c in before:
            total = after[c][1] - before[c][1]
            pct[c] = 100.0 * (after[c][0] - before[c][0]) / total if total > 0 else 0.0
    return pct


def idle_check(seconds: float = 1.0) -> float:
    """Busy % of the whole machine (100 = one full core) over a short sample, before a run."""
    before = read()
    time.sleep(seconds)
    return 100.0 * busy_seconds(before, read()) / seconds
