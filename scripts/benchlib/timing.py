"""Phase timing shared by the scenarios: event lines for the orchestrator, CPU over a window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from time import monotonic_ns
from typing import TypeVar

T = TypeVar("T")

# Scenarios report phase changes ("ready", "publish_start", "measure_start", "send_end",
# "drain_end") through this callback; the generator turns them into stdout lines so the
# orchestrator can snapshot the server's CPU counters at the same instants.
Emit = Callable[[str], None]


async def emit_at(t_ns: int, event: str, emit: Emit) -> None:
    """Emit `event` at monotonic time `t_ns`."""
    await asyncio.sleep(max(0, t_ns - monotonic_ns()) / 1e9)
    emit(event)


async def cpu_during(work: Awaitable[T], window: tuple[int, int]) -> float:
    """Await `work`; return this process's CPU % from window start until `work` finishes.

    This is how the generator proves it is not the bottleneck: near 100 % means the numbers
    measure the generator, not the server.
    """
    task = asyncio.ensure_future(work)
    await asyncio.sleep(max(0, window[0] - monotonic_ns()) / 1e9)
    cpu0, wall0 = time.process_time(), monotonic_ns()
    await task
    cpu1, wall1 = time.process_time(), monotonic_ns()
    return 100.0 * (cpu1 - cpu0) / max(1e-9, (wall1 - wall0) / 1e9)


async def open_loop(rate: float, start_ns: int, end_ns: int, send_one: Callable[[], None]) -> int:
    """Call `send_one` `rate` times a second from `start_ns` until `end_ns`, on a fixed
    schedule: a late call is made at once (catching up), never skipped, and never waits for an
    answer (no coordinated omission). Returns the largest lateness in ns."""
    interval = 1e9 / rate
    sent = burst = max_lag = 0
    while True:
        now = monotonic_ns()
        if now >= end_ns:
            return max_lag
        due = start_ns + int(sent * interval)
        if now < due:
            burst = 0
            await asyncio.sleep((due - now) / 1e9)
            continue
        max_lag = max(max_lag, now - due)
        send_one()
        sent += 1
        burst += 1
        if burst >= 64:  # behind schedule: still let the receivers run
            burst = 0
            await asyncio.sleep(0)
