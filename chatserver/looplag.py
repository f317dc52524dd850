"""Event-loop lag, measured continuously: how late a timer that should fire every
`interval` seconds actually fires. Lag is the symptom of CPU work on the loop ("messages arrive
in bunches"); it is exported as a histogram and its recent maximum.

The cause is found by the monitor's `stall_watch` (chatserver/stallwatch.py), which runs while
the monitor does: a callback that holds the loop past `[log] slow_callback_ms` is logged with
the coroutine or handler it ran and where it was."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from chatserver.stallwatch import StallWatch

INTERVAL = 0.1

ObserveFn = Callable[[float], None]


class LoopLagMonitor:
    def __init__(self, interval: float = INTERVAL, observe: ObserveFn | None = None, *,
                 stall_watch: StallWatch | None = None) -> None:
        self.interval = interval
        self.observe = observe
        self.last_lag = 0.0
        self._recent: deque[float] = deque(maxlen=600)  # about the last minute
        # Off (threshold 0) unless given: tests and tools that build a monitor get no thread.
        self.stall_watch = stall_watch or StallWatch(0.0)

    @property
    def recent_max(self) -> float:
        return max(self._recent, default=0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stall_watch.start()
        try:
            while True:
                expected = loop.time() + self.interval
                await asyncio.sleep(self.interval)
                lag = max(0.0, loop.time() - expected)
                self.last_lag = lag
                self._recent.append(lag)
                if self.observe is not None:
                    self.observe(lag)
        finally:
            self.stall_watch.stop()
