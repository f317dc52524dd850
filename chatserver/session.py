"""Per-connection state, sans-I/O, and the registry of open connections on this instance."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

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


class Connections:
    """Open connections by id and by the token that authenticated them."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._by_token: dict[str, set[str]] = {}
        self._per_user: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        """A snapshot: connections may open or close while the caller iterates."""
        return iter(list(self._by_id.values()))

    def add(self, session: Session) -> None:
        self._by_id[session.conn_id] = session
        self._by_token.setdefault(session.token_hash, set()).add(session.conn_id)
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

    def with_token(self, token_hash: str) -> list[Session]:
        return [self._by_id[i] for i in self._by_token.get(token_hash, ()) if i in self._by_id]

    def queued_bytes(self) -> list[int]:
        return [s.outbox.queued_bytes for s in self._by_id.values()]
