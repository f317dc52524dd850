"""Graceful degradation: how much to shed, from the event loop's lag and the pools' queues.

Levels, each including the ones before it:

1. shed ephemera — `typing` and `presence` are not relayed;
2. refuse new connections — upgrades answer 503 with Retry-After;
3. refuse sends — `send` and `stream_start` answer `overloaded`.

The guard is pure logic: the lag monitor feeds it a sample every tick (the time is passed in),
and it answers with a level. It rises at once when a threshold is crossed and falls one level
at a time, only after `calm_seconds` below the lower level's thresholds, so it does not flap.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

log = logging.getLogger(__name__)


class Level(IntEnum):
    NORMAL = 0
    SHED_EPHEMERAL = 1
    REFUSE_CONNECTIONS = 2
    REFUSE_SENDS = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per level 1..3: loop lag (seconds, worst of the recent window) and jobs waiting in the
    pools. Lag is what users feel; a pool queue is the lag that is coming."""

    lag: tuple[float, float, float] = (0.05, 0.2, 0.5)
    pool_queue: tuple[int, int, int] = (200, 1000, 5000)


WINDOW = 10  # samples (one per lag-monitor tick, 100 ms): about the last second
CALM_SECONDS = 3.0


class OverloadGuard:
    def __init__(self, thresholds: Thresholds = Thresholds(), *,
                 calm_seconds: float = CALM_SECONDS) -> None:
        self.thresholds = thresholds
        self.calm_seconds = calm_seconds
        self.level = Level.NORMAL
        self.shed_ephemeral = 0
        self.refused_connections = 0
        self.refused_sends = 0
        self._lags: deque[float] = deque(maxlen=WINDOW)
        self._calm_since: float | None = None

    def _pressure(self, lag: float, pool_queue: int) -> Level:
        level = Level.NORMAL
        for index, candidate in enumerate(
                (Level.SHED_EPHEMERAL, Level.REFUSE_CONNECTIONS, Level.REFUSE_SENDS)):
            if lag >= self.thresholds.lag[index] or pool_queue >= self.thresholds.pool_queue[index]:
                level = candidate
        return level

    def update(self, lag: float, pool_queue: int, now: float) -> Level:
        """Feed one sample; returns the level now in force."""
        self._lags.append(lag)
        pressure = self._pressure(max(self._lags), pool_queue)
        if pressure >= self.level:
            self._calm_since = None
            if pressure > self.level:
                self._change(pressure, lag, pool_queue)
            return self.level
        if self._calm_since is None:
            self._calm_since = now
        elif now - self._calm_since >= self.calm_seconds:
            self._calm_since = now
            self._change(Level(self.level - 1), lag, pool_queue)
        return self.level

    def _change(self, level: Level, lag: float, pool_queue: int) -> None:
        report = log.warning if level > self.level else log.info
        report("overload level %d -> %d (%s): loop lag %.0f ms, pool queue %d", self.level,
               level, level.name.lower().replace("_", " "), lag * 1000, pool_queue)
        self.level = level

    # -- the decisions, counted for /metrics ---------------------------------------------------

    def allow_ephemeral(self) -> bool:
        if self.level >= Level.SHED_EPHEMERAL:
            self.shed_ephemeral += 1
            return False
        return True

    def allow_connection(self) -> bool:
        if self.level >= Level.REFUSE_CONNECTIONS:
            self.refused_connections += 1
            return False
        return True

    def allow_send(self) -> bool:
        if self.level >= Level.REFUSE_SENDS:
            self.refused_sends += 1
            return False
        return True
