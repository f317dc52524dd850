"""The overload guard: levels from loop lag and pool queues, rising fast, falling slowly."""

from chatserver.overload import Level, OverloadGuard, Thresholds

T = Thresholds(lag=(0.05, 0.2, 0.5), pool_queue=(10, 20, 30))


def test_levels_follow_the_worst_of_lag_and_pool_queue() -> None:
    """Each threshold crossed by lag or by the pool queue raises the level at once."""
    guard = OverloadGuard(T)
    assert guard.update(0.01, 0, now=0.0) is Level.NORMAL
    assert guard.update(0.06, 0, now=0.1) is Level.SHED_EPHEMERAL
    assert guard.update(0.0, 25, now=0.2) is Level.REFUSE_CONNECTIONS
    assert guard.update(0.6, 0, now=0.3) is Level.REFUSE_SENDS


def test_level_falls_one_step_per_calm_period() -> None:
    """After pressure ends the level steps down one level per calm period, not at once."""
    guard = OverloadGuard(T, calm_seconds=1.0)
    guard.update(0.6, 0, now=0.0)
    now = 0.0
    for _ in range(20):  # flush the lag window with calm samples
        now += 0.1
        guard.update(0.0, 0, now=now)
    assert guard.level is Level.REFUSE_CONNECTIONS
    for _ in range(10):
        now += 0.1
        guard.update(0.0, 0, now=now)
    assert guard.level is Level.SHED_EPHEMERAL


def test_decisions_shed_in_order_and_are_counted() -> None:
    """Typing/presence go first, then connections, then sends; each refusal is counted."""
    guard = OverloadGuard(T)
    guard.update(0.06, 0, now=0.0)
    assert not guard.allow_ephemeral() and guard.allow_connection() and guard.allow_send()
    guard.update(0.3, 0, now=0.1)
    assert not guard.allow_connection() and guard.allow_send()
    guard.update(0.6, 0, now=0.2)
    assert not guard.allow_send()
    assert (guard.shed_ephemeral, guard.refused_connections, guard.refused_sends) == (1, 1, 1)
