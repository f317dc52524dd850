"""Per-connection state, sans-I/O, and the registry of open connections on this instance."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from chatserver.metrics import CLOSE_CODE_LABELS, close_code_label
from chatserver.outbox import Outbox
from chatserver.store.base import Room, User

TYPING_MIN_INTERVAL = 1.0  # seconds between relayed typing frames per connection and room


def new_connection_id() -> str:
    return secrets.token_urlsafe(9)


@dataclass(eq=False, slots=True)
class Session:
    """One WebSocket connection: who it is, what it joined, what it has in flight."""

    user: User
    token_hash: str
    outbox: Outbox
    conn_id: str = field(default_factory=new_connection_id)
    opened_at: float = field(default_factory=time.monotonic)
    rooms: dict[str, Room] = field(default_factory=dict)
    pending_sends: set[asyncio.Task[None]] = field(default_factory=set)
    # Ops that will store a message and have passed admission but not yet handed their append
    # to a task (they are rendering): shutdown waits for these too.
    storing: int = 0
    typing_sent: dict[str, float] = field(default_factory=dict)
    frames_in: int = 0
    bytes_in: int = 0
    bad_frames: int = 0

    @property
    def busy_storing(self) -> bool:
        return self.storing > 0 or bool(self.pending_sends)

    def typing_allowed(self, room: str, now: float) -> bool:
        """Relay at most one typing frame per room per interval; the rest are noise."""
        last = self.typing_sent.get(room)
        if last is not None and now - last < TYPING_MIN_INTERVAL:
            return False
        self.typing_sent[room] = now
        return True


@dataclass(slots=True)
class OutboxTotals:
    """Sums of outbox counters: of connections already closed, or with the open ones."""

    frames_out: int = 0
    bytes_out: int = 0
    writes: int = 0
    coalesced: int = 0
    superseded: int = 0
    shed: int = 0

    def add(self, outbox: Outbox) -> None:
        self.frames_out += outbox.frames_out
        self.bytes_out += outbox.bytes_out
        self.writes += outbox.writes
        self.coalesced += outbox.coalesced
        self.superseded += outbox.superseded
        self.shed += outbox.shed


class Connections:
    """Open connections by id, by the token that authenticated them and by user name, and
    what /metrics counts about connections (once per connection, never per frame)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._by_token: dict[str, set[str]] = {}
        self._by_user: dict[str, dict[str, Session]] = {}  # user name -> conn id -> session
        self._per_user: dict[int, int] = {}
        self.opened = 0
        self.cleaning_up = 0  # removed, and still flushing, closing or announcing presence
        self.evicted = 0  # closed as slow consumers (1013)
        # close code label -> connections; every label from the start, so rates start at 0
        self.closed_by_code: dict[str, int] = dict.fromkeys(CLOSE_CODE_LABELS, 0)
        self._closed_totals = OutboxTotals()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        """A snapshot: connections may open or close while the caller iterates."""
        return iter(list(self._by_id.values()))

    def add(self, session: Session) -> None:
        self.opened += 1
        self._by_id[session.conn_id] = session
        self._by_token.setdefault(session.token_hash, set()).add(session.conn_id)
        self._by_user.setdefault(session.user.name, {})[session.conn_id] = session
        self._per_user[session.user.id] = self._per_user.get(session.user.id, 0) + 1

    def count_of_user(self, user_id: int) -> int:
        return self._per_user.get(user_id, 0)

    def remove(self, session: Session) -> None:
        if self._by_id.pop(session.conn_id, None) is not None:
            left = self._per_user.get(session.user.id, 1) - 1
            if left:
                self._per_user[session.user.id] = left
            else:
                self._per_user.pop(session.user.id, None)
        ids = self._by_token.get(session.token_hash)
        if ids is not None:
            ids.discard(session.conn_id)
            if not ids:
                del self._by_token[session.token_hash]
        of_user = self._by_user.get(session.user.name)
        if of_user is not None and of_user.get(session.conn_id) is session:
            del of_user[session.conn_id]
            if not of_user:
                del self._by_user[session.user.name]

    def with_token(self, token_hash: str) -> list[Session]:
        return [self._by_id[i] for i in self._by_token.get(token_hash, ()) if i in self._by_id]

    def token_hashes(self) -> list[str]:
        """The distinct tokens (by hash) that authenticated the open connections."""
        return list(self._by_token)

    def of_user(self, name: str) -> list[Session]:
        """The user's open connections on this instance (a snapshot; one lookup)."""
        of_user = self._by_user.get(name)
        return list(of_user.values()) if of_user else []

    def queued_bytes(self) -> list[int]:
        return [s.outbox.queued_bytes for s in self._by_id.values()]

    def record_close(self, outbox: Outbox, code: int | None) -> None:
        """A connection ended with close `code` (None: without a close frame)."""
        label = close_code_label(code)
        self.closed_by_code[label] = self.closed_by_code.get(label, 0) + 1
        if outbox.evicted:
            self.evicted += 1
        self._closed_totals.add(outbox)

    def totals_with(self, outboxes: Iterable[Outbox]) -> OutboxTotals:
        """The closed connections' outbox counters plus those of `outboxes`."""
        closed = self._closed_totals
        totals = OutboxTotals(closed.frames_out, closed.bytes_out, closed.writes,
                              closed.coalesced, closed.superseded, closed.shed)
        for outbox in outboxes:
            totals.add(outbox)
        return totals
