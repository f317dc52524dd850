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
