"""Token buckets. The caller passes the time, so the logic is testable without a clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second refill a bucket of `burst`; each event takes one."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; return 0.0 on success, else the seconds until it would succeed."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.burst


class KeyedLimiter:
    """One bucket per key (user, address, username), with idle full buckets forgotten.

    The map is bounded by pruning buckets that have refilled: a key that went quiet costs
    nothing, so memory follows the number of recently active keys.
    """

    def __init__(self, rate: float, burst: float, *, prune_every: int = 1024) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._prune_every = prune_every
        self._calls = 0

    def take(self, key: str, now: float) -> float:
        """0.0 when allowed, else seconds to wait (the `retry_after` of `rate_limited`)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, updated=now)
        wait = bucket.take(now)
        self._calls += 1
        if self._calls % self._prune_every == 0:
            self._prune(now)
        return wait

    def reconfigure(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets.clear()

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
