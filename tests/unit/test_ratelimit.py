"""Token buckets with the time passed in."""

from chatserver.ratelimit import KeyedLimiter, TokenBucket


def test_bucket_allows_a_burst_then_asks_to_wait() -> None:
    """A full bucket allows `burst` events at once, then says how long until the next."""
    bucket = TokenBucket(rate=2.0, burst=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5
    assert bucket.take(0.5) == 0.0


def test_keyed_limiter_separates_keys_and_forgets_idle_ones() -> None:
    """Keys have separate buckets; refilled buckets are pruned so memory stays bounded."""
    limiter = KeyedLimiter(rate=1.0, burst=1, prune_every=2)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0
    limiter.take("c", 100.0)
    limiter.take("c", 100.0)
    assert len(limiter) <= 2
