"""Reconnect timing (pure): jittered exponential backoff, the spread after 1001/1013, and
the server's Retry-After hint."""

from __future__ import annotations

import random
from typing import Any

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# 1001 (server going away) and 1013 (try again later) ask clients to spread out: reconnect after
# a random 0.5-5 s (docs/protocol.md, "Daemon life"), so a restart is not met by a stampede.
AFTER_SERVER_HINT = (0.5, 5.0)
SPREAD_CLOSE_CODES = frozenset({1001, 1013})


def reconnect_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
                    close_code: int | None = None, retry_after: float | None = None,
                    spread: tuple[float, float] = AFTER_SERVER_HINT,
                    rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 = the first after a drop).

    Full jitter over an exponential window; a 1001/1013 close (`close_code`, given for the
    first attempt only) asks for a random wait within `spread` instead; a server's
    Retry-After is a floor."""
    draw = rng or random
    if close_code in SPREAD_CLOSE_CODES:
        delay = draw.uniform(*spread)
    else:
        delay = draw.uniform(0, min(cap, base * 2**attempt))
    return max(delay, retry_after) if retry_after is not None else delay


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff
