"""The PostgreSQL store: several server instances (processes, hosts) share one database.

Message appends are group-committed by `postgres_writer.PostgresWriter`: one statement and one
transaction per batch, seqs allocated under the room rows' locks, so instances writing to the
same room stay gap-free. Every other write is rare and runs as one awaited statement (atomic on
its own); reads run on the asyncpg pool. The event loop never blocks: asyncpg is asynchronous.

Unreachable database: every operation raises `StoreUnavailable` within `timeout` seconds
(getting a connection, connecting included, and running the statement share that budget; a
connection that timed out is closed, not cancelled). Appends queued behind a batch that found the
database unreachable fail at once rather than wait their own timeout. When PostgreSQL returns,
the pool connects afresh on the next acquire and the writer keeps serving: no restart.

Ordering by name uses the "C" collation, so listings sort bytewise like SQLite whatever the
database's default collation is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]  # no py.typed: asyncpg objects are Any here

from chatserver.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from chatserver.search import Cursor, SearchPage, SearchQuery
from chatserver.store import (
    postgres_events,
    postgres_files,
    postgres_reads,
    postgres_threads,
    search_postgres,
)
from chatserver.store.base import (
    LIST_USERS_SQL,
    MAX_RETENTION_DAYS,
    Hook,
    NewFile,
    NewMessage,
    ReadState,
    RemovedMessages,
    Room,
    RoomEvent,
    RoomKind,
    RoomListing,
    Store,
    StoredFile,
    StoredMessage,
    ThreadRoot,
    ThumbnailState,
    TokenInfo,
    TokenInvalid,
    TokenKind,
    User,
    UserListing,
    format_ts,
)
from chatserver.store.postgres_writer import (
    DATA_ERRORS,
    PG_ERRORS,
    UNREACHABLE,
    UNSTORABLE,
    PostgresWriter,
    WriterStats,
    WriterTimings,
    acquire,
    apply_migrations,
    unavailable,
)

# The same direct-room names on both backends: a database moved between them keeps its rooms.
from chatserver.store.sqlite import direct_room_name

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0  # seconds: connect, acquire and statement bound while the DB is away

_USER = "u.id, u.name, u.is_admin, u.disabled, u.is_bot"
_ROOM = "r.id, r.name, r.kind, r.created_by"
_MESSAGE = "m.seq, m.id, m.user_name, m.text, m.html, m.ts, m.stream, m.aborted, r.name"
# A hook with its room and bot: columns 0-3 the room, 4-8 the bot (as _ROOM and _USER), then
# the hook's own.
_HOOK_COLUMNS = f"{_ROOM}, {_USER}, h.id, h.created_by, h.created_at, h.revoked_at"
_HOOK_JOINS = "JOIN rooms r ON r.id = h.room_id JOIN users u ON u.id = h.bot_id"
_HOOK = f"SELECT {_HOOK_COLUMNS} FROM hooks h {_HOOK_JOINS}"
# The hashes of one array parameter that no longer authenticate, each with why: one
# primary-key lookup per hash, one statement however many there are.
_INVALID_TOKENS = (
    "SELECT h.hash, CASE WHEN u.disabled THEN 'disabled' ELSE 'revoked' END"
    " FROM (SELECT DISTINCT unnest($1::text[]) AS hash) h"
    " LEFT JOIN tokens t ON t.hash = h.hash LEFT JOIN users u ON u.id = t.user_id"
    " WHERE t.hash IS NULL OR t.revoked_at IS NOT NULL OR u.disabled"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _user(row: Any) -> User:
    return User(id=row[0], name=row[1], is_admin=row[2], disabled=row[3], is_bot=row[4])


def _room(row: Any) -> Room:
    return Room(id=row[0], name=row[1], kind=cast(RoomKind, row[2]), created_by=row[3])


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        room=row[8],
        seq=row[0],
        id=row[1],
        user=row[2],
        text=row[3],
        html=row[4],
        ts=format_ts(row[5]),
        stream=row[6],
        aborted=row[7],
    )


def _hook(row: Any) -> Hook:
    return Hook(
        id=row[9],
        room=Room(id=row[0], name=row[1], kind=cast(RoomKind, row[2]), created_by=row[3]),
        bot=User(id=row[4], name=row[5], is_admin=row[6], disabled=row[7], is_bot=row[8]),
        created_by=row[10],
        created_at=format_ts(row[11]),
        revoked_at=format_ts(row[12]) if row[12] is not None else None,
    )


async def _no_reset(conn: Any) -> None:
    """Pool release hook: nothing to reset.

    asyncpg's default reset costs a round trip per release; this store never leaves session
    state behind (no LISTEN, no SET, advisory locks only transaction-scoped), and asyncpg still
    rolls back an open transaction itself before calling this.
    """


class PostgresStore(Store):
    """`Store` on a PostgreSQL database (asyncpg). `stats` exposes the writer's counters.

    `pool_size` caps the connections of this instance: one is the writer's, the others serve
    reads (with `pool_size=1` both share one). `timeout` bounds connecting, waiting for a
    connection and each statement, in seconds.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        max_pending_writes: int = 10000,
        batch_max: int = 512,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be more than 0 seconds")
        self._dsn = dsn
        self._pool_size = pool_size
        self._max_pending_writes = max_pending_writes
        self._batch_max = batch_max
        self._timeout = timeout
        self._pool: Any = None  # readers and the rare non-message writes
        self._pools: list[Any] = []  # every pool to close: the readers' and the writer's
        self._writer: PostgresWriter | None = None
        self._closing: asyncio.Future[None] | None = None

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats if self._writer is not None else WriterStats()

    @property
    def timings(self) -> WriterTimings:
        return self._writer.timings if self._writer is not None else WriterTimings()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pools or self._closing is not None:
            raise RuntimeError("a PostgresStore opens once")
        await self.migrate()
        if self._pool_size == 1:
            writer_pool = self._pool = await self._make_pool(1)
            self._pools = [self._pool]
        else:
            # The writer's connection is its own, so appends never queue behind a burst of
            # reads for one; the readers (and the rare account and room writes) get the rest.
            self._pool = await self._make_pool(self._pool_size - 1)
            writer_pool = await self._make_pool(1)
            self._pools = [self._pool, writer_pool]
        self._writer = PostgresWriter(
            writer_pool,
            max_pending=self._max_pending_writes,
            batch_max=self._batch_max,
            timeout=self._timeout,
        )
        self._writer.start()

    async def _make_pool(self, size: int) -> Any:
        # min_size=0: connections are made on demand, so this does no I/O and cannot fail on
        # an outage. With a floor, asyncpg would also reconnect in the background during an
        # outage and log a traceback at every retry.
        return await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=size,
            timeout=self._timeout,  # connect; `acquire` bounds the rest
            reset=_no_reset,
            server_settings={"application_name": "chatserver"},
        )

    async def migrate(self) -> list[int]:
        # A connection of its own, like any other process would use: works before open() (the
        # CLI's `migrate`) and while the store runs. No statement timeout: a migration may
        # legitimately run long, or wait for another instance's.
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
        except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
            # A configuration mistake, not an outage: say what is wrong with the DSN.
            raise ValueError(f"the PostgreSQL dsn is not valid: {exc}") from None
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc
        try:
            return await apply_migrations(conn)
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            try:
                await conn.close(timeout=self._timeout)
            except PG_ERRORS:
                conn.terminate()

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        # Shielded: a caller cancelled mid-close must not leave the writer half drained.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        await asyncio.gather(*(self._close_pool(pool) for pool in self._pools))

    async def _close_pool(self, pool: Any) -> None:
        try:
            # Waits for reads in flight to give their connections back, within bounds.
            await asyncio.wait_for(pool.close(), self._timeout)
        except PG_ERRORS:  # TimeoutError included
            pool.terminate()

    async def ping(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            raise StoreUnavailable("the message store is not accepting writes")
        await self._run(lambda c: c.fetchval("SELECT 1"))

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn` on a pooled connection within the timeout, mapping errors.

        Unique and foreign-key violations pass through as asyncpg errors for `_write` to name;
        a value PostgreSQL cannot store is `BadRequest`; any other trouble `StoreUnavailable`.
        """
        if self._pool is None or self._closing is not None:
            raise StoreUnavailable("the message store is not open")
        try:
            async with acquire(self._pool, self._timeout) as conn:
                return await fn(conn)
        except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError):
            raise
        except DATA_ERRORS:
            raise BadRequest(UNSTORABLE) from None
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc

    async def _write(
        self, fn: Callable[[Any], Awaitable[T]], *, conflict: str = "", not_found: str = ""
    ) -> T:
        """Run a one-statement write: a unique violation is `Conflict`, a missing row NotFound."""
        try:
            return await self._run(fn)
        except asyncpg.UniqueViolationError as exc:
            if conflict:
                raise Conflict(conflict) from None
            raise unavailable(exc) from exc
        except asyncpg.ForeignKeyViolationError as exc:
            if not_found:
                raise NotFound(not_found) from None
            raise unavailable(exc) from exc

    # -- users and tokens ------------------------------------------------------------------

    async def create_user(
        self, name: str, password_hash: str, *, is_admin: bool = False, is_bot: bool = False
    ) -> User:
        user_id = await self._write(
            lambda c: c.fetchval(
                "INSERT INTO users (name, password_hash, is_admin, is_bot, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                name, password_hash, is_admin, is_bot, _now_ms(),
            ),
            conflict=f"the user name {name!r} is taken",
        )
        return User(id=user_id, name=name, is_admin=is_admin, is_bot=is_bot)

    async def get_user(self, name: str) -> User | None:
        row = await self._run(
            lambda c: c.fetchrow(f"SELECT {_USER} FROM users u WHERE name = $1", name)
        )
        return _user(row) if row else None

    async def get_password_hash(self, name: str) -> tuple[User, str] | None:
        sql = f"SELECT {_USER}, u.password_hash FROM users u WHERE name = $1"
        row = await self._run(lambda c: c.fetchrow(sql, name))
        return (_user(row), row[5]) if row else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        found = await self._write(
            lambda c: c.fetchval(
                "UPDATE users SET password_hash = $1 WHERE id = $2 RETURNING id",
                password_hash, user_id,
            )
        )
        if found is None:
            raise NotFound("no such user")

    async def set_disabled(self, name: str, disabled: bool) -> User:
        row = await self._write(
            lambda c: c.fetchrow(
                "UPDATE users SET disabled = $1 WHERE name = $2"
                " RETURNING id, name, is_admin, disabled, is_bot",
                disabled, name,
            )
        )
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return _user(row)

    async def count_users(self) -> int:
        return int(await self._run(lambda c: c.fetchval("SELECT count(*) FROM users")))

    async def list_users(self) -> list[UserListing]:
        rows = await self._run(lambda c: c.fetch(LIST_USERS_SQL))
        return [UserListing(_user(r), r[5], r[6], r[7]) for r in rows]

    async def add_token(self, user_id: int, token_hash: str, kind: TokenKind) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO tokens (hash, user_id, kind, created_at) VALUES ($1, $2, $3, $4)",
                token_hash, user_id, kind, _now_ms(),
            ),
            conflict="that token already exists",
            not_found="no such user",
        )

    async def token_info(self, token_hash: str) -> TokenInfo | None:
        sql = (
            f"SELECT {_USER}, t.kind FROM tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.hash = $1 AND t.revoked_at IS NULL"
        )
        row = await self._run(lambda c: c.fetchrow(sql, token_hash))
        if row is None:
            return None
        return TokenInfo(user=_user(row), token_hash=token_hash, kind=cast(TokenKind, row[5]))

    async def revoke_token(self, token_hash: str) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE tokens SET revoked_at = $1 WHERE hash = $2 AND revoked_at IS NULL",
                _now_ms(), token_hash,
            )
        )

    async def revoke_user_tokens(self, user_id: int, kind: TokenKind | None = None) -> int:
        count = await self._write(
            lambda c: c.fetchval(
                "WITH revoked AS (UPDATE tokens SET revoked_at = $1 WHERE user_id = $2"
                " AND revoked_at IS NULL AND ($3::text IS NULL OR kind = $3)"
                " RETURNING 1) SELECT count(*) FROM revoked",
                _now_ms(), user_id, kind,
            )
        )
        return int(count)

    async def invalid_tokens(self, token_hashes: Sequence[str]) -> dict[str, TokenInvalid]:
        if not token_hashes:
            return {}
        hashes = list(token_hashes)
        rows = await self._run(lambda c: c.fetch(_INVALID_TOKENS, hashes))
        return {row[0]: cast(TokenInvalid, row[1]) for row in rows}

    # -- rooms ---------------------------------------------------------------------------------

    async def create_room(self, name: str, kind: RoomKind, created_by: int | None) -> Room:
        # One statement, so the room and its first member are stored together or not at all.
        room_id = await self._write(
            lambda c: c.fetchval(
                "WITH room AS ("
                "  INSERT INTO rooms (name, kind, created_by, created_at)"
                "  VALUES ($1, $2, $3, $4) RETURNING id"
                "), member AS ("
                "  INSERT INTO members (room_id, user_id, joined_at)"
                "  SELECT id, $3, $4 FROM room WHERE $3::bigint IS NOT NULL"
                ") SELECT id FROM room",
                name, kind, created_by, _now_ms(),
            ),
            conflict=f"the room name {name!r} is taken",
            not_found="no such user",
        )
        return Room(id=room_id, name=name, kind=kind, created_by=created_by)

    async def get_room(self, name: str) -> Room | None:
        row = await self._run(
            lambda c: c.fetchrow(f"SELECT {_ROOM} FROM rooms r WHERE name = $1", name)
        )
        return _room(row) if row else None

    async def direct_room(self, a: User, b: User) -> tuple[Room, bool]:
        lo, hi = sorted((a.id, b.id))
        key = f"{lo}:{hi}"
        select = f"SELECT {_ROOM} FROM rooms r WHERE direct_key = $1"
        row = await self._run(lambda c: c.fetchrow(select, key))
        if row is not None:  # most calls: the room exists
            return _room(row), False
        # ON CONFLICT without a target covers every unique index: a racing call (or instance)
        # inserting the same key (or name) makes this one wait for it, then do nothing (and
        # return no row: only the call that created the room gets its members back).
        created = await self._write(
            lambda c: c.fetchval(
                "WITH room AS ("
                "  INSERT INTO rooms (name, kind, created_by, created_at, direct_key)"
                "  VALUES ($1, 'direct', $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id"
                ") INSERT INTO members (room_id, user_id, joined_at)"
                " SELECT DISTINCT room.id, u, $3 FROM room, unnest($5::bigint[]) AS u"
                " RETURNING room_id",
                direct_room_name(lo, hi), a.id, _now_ms(), key, [lo, hi],
            ),
            not_found="no such user",
        )
        # A new statement sees the row whichever call committed it.
        row = await self._run(lambda c: c.fetchrow(select, key))
        if row is None:
            raise Conflict("the direct room's name is taken by another room")
        return _room(row), created is not None

    async def add_member(self, room_id: int, user_id: int) -> bool:
        added = await self._write(
            lambda c: c.fetchval(
                "INSERT INTO members (room_id, user_id, joined_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                room_id, user_id, _now_ms(),
            ),
            not_found="no such room or user",
        )
        return added is not None

    async def is_member(self, room_id: int, user_id: int) -> bool:
        sql = "SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2"
        return await self._run(lambda c: c.fetchval(sql, room_id, user_id)) is not None

    async def member_names(self, room_id: int) -> list[str]:
        sql = (
            "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id"
            ' WHERE m.room_id = $1 ORDER BY u.name COLLATE "C"'
        )
        rows = await self._run(lambda c: c.fetch(sql, room_id))
        return [row[0] for row in rows]

    async def rooms_of_user(self, user_id: int) -> list[str]:
        sql = (
            "SELECT r.name FROM members m JOIN rooms r ON r.id = m.room_id"
            ' WHERE m.user_id = $1 ORDER BY r.name COLLATE "C"'
        )
        rows = await self._run(lambda c: c.fetch(sql, user_id))
        return [row[0] for row in rows]

    async def rooms_visible_to(self, user_id: int) -> list[RoomListing]:
        # One statement, so the rooms and the direct rooms' members come from one snapshot.
        sql = (
            f"SELECT {_ROOM}, r.last_seq, m.user_id IS NOT NULL,"
            "  CASE WHEN r.kind = 'direct' THEN ARRAY("
            "    SELECT u.name FROM members o JOIN users u ON u.id = o.user_id"
            '    WHERE o.room_id = r.id ORDER BY u.name COLLATE "C") END,'
            "  r.retention_days"
            " FROM rooms r LEFT JOIN members m ON m.room_id = r.id AND m.user_id = $1"
            " WHERE r.kind = 'public' OR m.user_id IS NOT NULL"
            ' ORDER BY r.name COLLATE "C"'
        )
        rows = await self._run(lambda c: c.fetch(sql, user_id))
        return [
            RoomListing(
                room=_room(row), member=row[5], last_seq=row[4], members=tuple(row[6] or ()),
                retention_days=row[7],
            )
            for row in rows
        ]

    # -- incoming webhooks ---------------------------------------------------------------------

    async def create_hook(
        self, room_id: int, bot_id: int, token_hash: str, created_by: int | None
    ) -> Hook:
        # One statement: the hook is inserted and read back with its room and bot atomically.
        row = await self._write(
            lambda c: c.fetchrow(
                "WITH h AS ("
                "  INSERT INTO hooks (token_hash, room_id, bot_id, created_by, created_at)"
                "  VALUES ($1, $2, $3, $4, $5) RETURNING *"
                f") SELECT {_HOOK_COLUMNS} FROM h {_HOOK_JOINS}",
                token_hash, room_id, bot_id, created_by, _now_ms(),
            ),
            conflict="that hook token already exists",
            not_found="no such room or user",
        )
        return _hook(row)

    async def hook_by_token(self, token_hash: str) -> Hook | None:
        sql = f"{_HOOK} WHERE h.token_hash = $1 AND h.revoked_at IS NULL"
        row = await self._run(lambda c: c.fetchrow(sql, token_hash))
        return _hook(row) if row else None

    async def list_hooks(self) -> list[Hook]:
        rows = await self._run(lambda c: c.fetch(f"{_HOOK} ORDER BY h.id"))
        return [_hook(row) for row in rows]

    async def revoke_hook(self, hook_id: int) -> Hook:
        # COALESCE keeps the first revocation's time; RETURNING through a CTE gives the row
        # with its room and bot in the same statement.
        row = await self._write(
            lambda c: c.fetchrow(
                "WITH h AS ("
                "  UPDATE hooks SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2"
                "  RETURNING *"
                f") SELECT {_HOOK_COLUMNS} FROM h {_HOOK_JOINS}",
                _now_ms(), hook_id,
            )
        )
        if row is None:
            raise NotFound(f"no hook with id {hook_id}")
        return _hook(row)

    # -- files (chatserver/store/postgres_files.py) ---------------------------------------------

    async def add_file(self, file: NewFile) -> StoredFile:
        row = await self._write(
            lambda c: c.fetchrow(
                postgres_files.INSERT_FILE,
                file.id, file.room_id, file.uploader_id, file.uploader, file.name, file.size,
                file.content_type, file.sha256, _now_ms(), file.thumbnail,
            ),
            conflict="that file id is taken",
            not_found="no such room or user",
        )
        return postgres_files.file_from_row(row)

    async def get_file(self, file_id: str) -> StoredFile | None:
        sql = f"{postgres_files.SELECT_FILE} WHERE f.id = $1"
        row = await self._run(lambda c: c.fetchrow(sql, file_id))
        return postgres_files.file_from_row(row) if row else None

    async def set_file_thumbnail(
        self, file_id: str, state: ThumbnailState, thumbnail_type: str | None,
        content_type: str | None = None,
    ) -> StoredFile:
        row = await self._write(lambda c: c.fetchrow(
            postgres_files.UPDATE_THUMBNAIL, file_id, state, thumbnail_type, content_type))
        if row is None:
            raise NotFound("no such file")
        return postgres_files.file_from_row(row)

    async def delete_file(self, file_id: str) -> None:
        await self._write(lambda c: c.execute(postgres_files.DELETE_FILE, file_id))

    # -- messages ------------------------------------------------------------------------------

    async def append_message(self, message: NewMessage) -> StoredMessage:
        if self._writer is None or self._closing is not None:
            raise StoreUnavailable("the message store is not open")
        fields = (message.text, message.html, message.user, message.stream or "")
        if any("\x00" in field for field in fields):
            # PostgreSQL text cannot hold NUL. Refused here, it cannot fail a whole batch.
            raise BadRequest("the message contains a NUL character, which cannot be stored")
        return await self._writer.submit(message)

    async def messages_after(self, room_id: int, after: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        sql = (
            f"SELECT {_MESSAGE} FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.room_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"
        )

        async def read(c: Any) -> list[StoredMessage]:
            rows = await c.fetch(sql, room_id, after, limit)
            return await _complete_page(c, room_id, [_message(row) for row in rows])

        return await self._run(read)

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        bound = before if before is not None else 1 << 62
        sql = (
            f"SELECT {_MESSAGE} FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3"
        )

        async def read(c: Any) -> list[StoredMessage]:
            rows = await c.fetch(sql, room_id, bound, limit)
            messages = [_message(row) for row in reversed(rows)]
            return await _complete_page(c, room_id, messages)

        return await self._run(read)

    # -- threads (chatserver/store/postgres_threads.py) --------------------------------------

    async def thread_root(self, room_id: int, seq: int) -> ThreadRoot | None:
        return await self._run(lambda c: postgres_threads.thread_root(c, room_id, seq))

    async def thread_after(
        self, room_id: int, root: int, after: int, limit: int
    ) -> list[StoredMessage]:
        return await self._thread_page(room_id, root, after, limit, after=True)

    async def thread_before(
        self, room_id: int, root: int, before: int | None, limit: int
    ) -> list[StoredMessage]:
        bound = before if before is not None else 1 << 62
        return await self._thread_page(room_id, root, bound, limit, after=False)

    async def _thread_page(
        self, room_id: int, root: int, bound: int, limit: int, *, after: bool
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        sql = postgres_threads.page_sql(_MESSAGE, after)

        async def read(c: Any) -> list[StoredMessage]:
            rows = await c.fetch(sql, room_id, root, bound, limit)
            ordered = rows if after else list(reversed(rows))
            # The same page completion as messages_after: a reply reads the same in its
            # thread as in the room's history.
            return await _complete_page(c, room_id, [_message(r) for r in ordered])

        return await self._run(read)

    async def latest_seq(self, room_id: int) -> int:
        value = await self._run(
            lambda c: c.fetchval("SELECT last_seq FROM rooms WHERE id = $1", room_id)
        )
        return int(value) if value is not None else 0

    # -- mentions and read positions (chatserver/store/postgres_reads.py) ---------------------

    async def user_ids(self, names: list[str]) -> dict[str, int]:
        return await self._run(lambda c: postgres_reads.user_ids(c, names))

    async def set_read(self, user_id: int, room_id: int, seq: int) -> tuple[int, bool]:
        row = await self._write(lambda c: c.fetchrow(postgres_reads.SET_READ, user_id, room_id,
                                                     seq))
        latest, before, moved = row
        if latest is None:
            raise NotFound("no such room")
        if moved is not None:
            return int(moved), True
        return int(before or 0), False

    async def read_states(self, user_id: int) -> dict[int, ReadState]:
        return await self._run(lambda c: postgres_reads.read_states(c, user_id))

    # -- room events (chatserver/store/postgres_events.py) ------------------------------------

    async def edit_message(
        self, room_id: int, target: int, actor: User, text: str, html: str
    ) -> RoomEvent:
        return await self._run(
            lambda c: postgres_events.edit(c, room_id, target, actor, text, html))

    async def delete_message(
        self, room_id: int, target: int, actor: User
    ) -> tuple[RoomEvent, tuple[str, ...]]:
        return await self._run(lambda c: postgres_events.delete(c, room_id, target, actor))

    async def react(
        self, room_id: int, target: int, actor: User, emoji: str, add: bool
    ) -> RoomEvent | None:
        return await self._run(
            lambda c: postgres_events.react(c, room_id, target, actor, emoji, add))

    async def events_after(self, room_id: int, after: int, limit: int) -> list[RoomEvent]:
        if limit <= 0:
            return []
        return await self._run(lambda c: postgres_events.events_after(c, room_id, after, limit))

    # -- search (chatserver/store/search_postgres.py) ---------------------------------------

    async def search_messages(
        self,
        user_id: int,
        query: SearchQuery,
        *,
        room_id: int | None = None,
        after: Cursor | None = None,
        limit: int = 20,
    ) -> SearchPage:
        page, searchable = await self._run(
            lambda c: search_postgres.search(c, user_id, query, room_id, after, limit)
        )
        if not searchable:
            raise BadRequest(
                "the search query has only words too common to be indexed (such as 'the')"
            )
        return page

    # -- retention -----------------------------------------------------------------------------

    async def set_retention(self, room_id: int, days: int) -> None:
        if not 0 <= days <= MAX_RETENTION_DAYS:
            raise BadRequest(f"retention must be 0..{MAX_RETENTION_DAYS} days")
        found = await self._write(
            lambda c: c.fetchval(
                "UPDATE rooms SET retention_days = $1 WHERE id = $2 RETURNING id", days, room_id
            )
        )
        if found is None:
            raise NotFound("no such room")

    async def rooms_with_retention(self) -> list[tuple[Room, int]]:
        sql = (
            f"SELECT {_ROOM}, r.retention_days FROM rooms r"
            " WHERE r.retention_days > 0 ORDER BY r.id"
        )
        rows = await self._run(lambda c: c.fetch(sql))
        return [(_room(row), int(row[4])) for row in rows]

    async def remove_messages_before(
        self, room_id: int, before_ms: int, limit: int
    ) -> RemovedMessages:
        if limit <= 0:
            return RemovedMessages()
        # One statement on the pool, like the other rare writes, not through the append
        # writer: it locks only the rows it removes, never the rooms row appends allocate
        # seqs under, so appends to the room go on meanwhile. The search entries are a
        # column of the removed rows (0003).
        row = await self._write(
            lambda c: c.fetchrow(_REMOVE_BEFORE, room_id, before_ms, limit)
        )
        return RemovedMessages(int(row[0]), tuple(row[1]), more=bool(row[2]))



async def _complete_page(c: Any, room_id: int,
                         messages: list[StoredMessage]) -> list[StoredMessage]:
    """A page of messages as history shows them: with their files, current state after
    edits, deletions and reactions, mentions, and thread summaries (§10). Every read that
    returns messages goes through here, so history, replay, threads and export agree."""
    page = await postgres_files.attach_files(c, room_id, messages)
    page = await postgres_events.attach_state(c, room_id, page)
    page = await postgres_reads.with_mentions(c, room_id, page)
    return await postgres_threads.with_threads(c, room_id, page)

# The oldest `limit` messages of room $1, up to (not including) the first one stored at or
# after $2, and their files' rows: a range of the primary key, so it costs `limit` rows whatever
# the room's size. An instance removing the same rows at once waits for this one's row locks,
# then finds them gone (READ COMMITTED re-checks them): nothing is reported twice. See
# Store.remove_messages_before.
_REMOVE_BEFORE = """
WITH oldest AS MATERIALIZED (
    SELECT seq, ts FROM messages WHERE room_id = $1 ORDER BY seq LIMIT $3
), bound AS (
    SELECT max(seq) AS seq FROM oldest
    WHERE seq < (SELECT coalesce(min(seq), 1::bigint << 62) FROM oldest WHERE ts >= $2)
), removed AS (
    DELETE FROM messages m USING bound b WHERE m.room_id = $1 AND m.seq <= b.seq
    RETURNING m.seq
), events_removed AS (
    -- Room events (0006) of the removed messages, joined on what `removed` returns so each
    -- message row is locked before its events' and reactions' rows: the order an event's own
    -- transaction (postgres_events) takes them in, so the two never deadlock.
    DELETE FROM events e USING removed r WHERE e.room_id = $1 AND e.target_seq = r.seq
), reactions_removed AS (
    DELETE FROM reactions x USING removed r WHERE x.room_id = $1 AND x.target_seq = r.seq
), files AS (
    DELETE FROM files f USING bound b WHERE f.room_id = $1 AND f.seq <= b.seq RETURNING f.id
)
SELECT (SELECT count(*) FROM removed), ARRAY(SELECT id FROM files),
       (SELECT count(*) FROM oldest WHERE seq <= (SELECT seq FROM bound)) >= $3
"""


__all__ = ["DEFAULT_TIMEOUT", "UNREACHABLE", "PostgresStore", "WriterStats", "direct_room_name"]
