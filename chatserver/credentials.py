"""Open connections whose credentials no longer hold are closed with 1008, on every instance.

A WebSocket is authenticated once, at the upgrade; afterwards two things close it when its
token stops authenticating (docs/protocol.md §9, "Errors and closing"):

- A logout (POST /api/logout, chatserver.auth) closes the token's connections on the instance
  that answered at once, then publishes a `logout` event carrying the token's hash (never the
  token); every instance's hub closes that token's connections when it arrives (Redis: on the
  instance-wide channel). Immediate, but the broker may lose it (Redis down).
- The sweep (`run`, started with the app like retention): every SWEEP_SECONDS each instance
  asks the store, in one statement (per BATCH_MAX tokens), which of the distinct tokens of
  its open connections no longer authenticate (`Store.invalid_tokens`), and closes their
  connections. It catches
  what no event announces: `chatserver user disable` (another process, no broker), a token
  revoked by another process, a `logout` event lost while Redis was down, and a connection
  that was still being upgraded when its token's event passed.

Close reasons: "session logged out" for a revoked (or vanished) token, "user disabled" when
its user is disabled. Closing drops what was queued for the connection (nothing more of its
rooms reaches it) and never waits: `Outbox.close` only asks its writer task to close.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chatserver import periodic
from chatserver.broker.base import Event
from chatserver.errors import CloseCode
from chatserver.store.base import Store, TokenInvalid

if TYPE_CHECKING:
    from chatserver.session import Connections, Session

log = logging.getLogger(__name__)

# Module constants rather than configuration: tests override them; operators have no reason to.
# 30 s bounds how long a socket outlives a CLI `user disable` (or a lost logout event) for
# the price of one indexed read per instance per interval, which a store shrugs off; the
# logout event makes the common case immediate, so a shorter interval would buy little.
SWEEP_SECONDS = 30.0
# Each wait is drawn from [1 - JITTER, 1] times SWEEP_SECONDS: instances started together
# (a restart of every worker) do not query the store together, and the worst case stays
# SWEEP_SECONDS.
JITTER = 0.2
# Token hashes per store statement: one statement per sweep up to this many distinct tokens
# (connections_per_instance defaults to 10,000), bounded memory and statement size beyond.
BATCH_MAX = 10_000

LOGGED_OUT = "session logged out"
DISABLED = "user disabled"
REASONS: dict[TokenInvalid, str] = {"revoked": LOGGED_OUT, "disabled": DISABLED}


def logout_event(token_hash: str) -> Event:
    """The event that closes the token's connections on every instance."""
    return Event("logout", "", b"", key=token_hash)


def close_token(connections: Connections, token_hash: str, reason: str) -> int:
    """Close this instance's open connections authenticated by the token with 1008; returns
    how many were open (connections already closing are left alone and not counted)."""
    return _close(connections.with_token(token_hash), reason)


def _close(sessions: Iterable[Session], reason: str) -> int:
    closed = 0
    for session in sessions:
        outbox = session.outbox
        if outbox.closing:
            continue
        # No flush: nothing more of the user's rooms may reach a socket whose credentials
        # are gone.
        outbox.close(CloseCode.POLICY, reason, flush=False)
        closed += 1
    return closed


async def sweep(connections: Connections, store: Store) -> int:
    """One pass: close the connections whose token no longer authenticates; returns how many.
    Raises what the store raises (`StoreUnavailable` while it is unreachable)."""
    hashes = connections.token_hashes()
    closed = 0
    for start in range(0, len(hashes), BATCH_MAX):
        invalid = await store.invalid_tokens(hashes[start:start + BATCH_MAX])
        for token_hash, why in invalid.items():
            sessions = connections.with_token(token_hash)
            count = _close(sessions, REASONS[why])
            if count:
                closed += count
                log.info("closed %d connection(s) of user %s: %s", count,
                         sessions[0].user.name, REASONS[why])
    return closed


async def run(connections: Connections, store: Store, interval: float | None = None) -> None:
    """Sweep every `interval` seconds (default SWEEP_SECONDS, jittered) until cancelled; a
    failed sweep is logged and the next one retries."""
    def wait() -> float:
        period = SWEEP_SECONDS if interval is None else interval
        return period * random.uniform(1 - JITTER, 1)

    await periodic.repeat("credential sweep", lambda: sweep(connections, store), log,
                          first=wait, then=wait, idle=lambda: not len(connections))


__all__ = ["DISABLED", "LOGGED_OUT", "SWEEP_SECONDS", "close_token", "logout_event", "run",
           "sweep"]
