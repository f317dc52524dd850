"""The embedded default store: one SQLite file in WAL mode.

Writes go to one writer thread (`sqlite_writer.SqliteWriter`) that group-commits them; reads run
on a two-thread pool, each thread with its own connection. The event loop only submits and awaits.
The admin CLI may open the same file while the server runs: seqs are allocated inside the write
transaction and the write lock is waited for (busy_timeout), so both processes stay gap-free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from chatserver.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from chatserver.search import Cursor, SearchPage, SearchQuery
from chatserver.store import (
    search_sqlite,
    sqlite_events,
    sqlite_files,
    sqlite_reads,
    sqlite_threads,
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
from chatserver.store.sqlite_writer import (
    SqliteWriter,
    WriterStats,
    WriterTimings,
    apply_migrations,
    connect,
)

T = TypeVar("T")

_USER = "u.id, u.name, u.is_admin, u.disabled, u.is_bot"
_ROOM = "r.id, r.name, r.kind, r.created_by"
_MESSAGE = "m.seq, m.id, m.user_name, m.text, m.html, m.ts, m.stream, m.aborted, r.name"
# A hook with its room and bot: columns 0-3 the room, 4-8 the bot (as _ROOM and _USER), then
# the hook's own.
_HOOK_COLUMNS = f"{_ROOM}, {_USER}, h.id, h.created_by, h.created_at, h.revoked_at"
_HOOK_JOINS = "JOIN rooms r ON r.id = h.room_id JOIN users u ON u.id = h.bot_id"
_HOOK = f"SELECT {_HOOK_COLUMNS} FROM hooks h {_HOOK_JOINS}"
# The hashes of one JSON array parameter that no longer authenticate, each with why: one
# primary-key lookup per hash.
_INVALID_TOKENS = (
    "SELECT j.value, CASE WHEN u.disabled THEN 'disabled' ELSE 'revoked' END"
    " FROM (SELECT DISTINCT value FROM json_each(?)) j"
    " LEFT JOIN tokens t ON t.hash = j.value LEFT JOIN users u ON u.id = t.user_id"
    " WHERE t.hash IS NULL OR t.revoked_at IS NOT NULL OR u.disabled"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _user(row: sqlite3.Row | tuple[Any, ...]) -> User:
    return User(
        id=row[0], name=row[1], is_admin=bool(row[2]), disabled=bool(row[3]), is_bot=bool(row[4])
    )


def _room(row: sqlite3.Row | tuple[Any, ...]) -> Room:
    return Room(id=row[0], name=row[1], kind=cast(RoomKind, row[2]), created_by=row[3])


def _message(row: sqlite3.Row | tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(
        room=row[8],
        seq=row[0],
        id=row[1],
        user=row[2],
        text=row[3],
        html=row[4],
        ts=format_ts(row[5]),
        stream=row[6],
        aborted=bool(row[7]),
    )


def _hook(row: sqlite3.Row | tuple[Any, ...]) -> Hook:
    return Hook(
        id=row[9],
        room=_room(row[0:4]),
        bot=_user(row[4:9]),
        created_by=row[10],
        created_at=format_ts(row[11]),
        revoked_at=format_ts(row[12]) if row[12] is not None else None,
    )


def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    # fetchall, not fetchone: it steps a RETURNING statement to completion, so no statement is
    # left active when the job's savepoint is released.
    rows = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _constraint_error(exc: sqlite3.IntegrityError, conflict: str, not_found: str) -> Exception:
    code = exc.sqlite_errorcode
    if code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
        return NotFound(not_found)
    if code in (sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY):
        return Conflict(conflict)
    return exc


def direct_room_name(lo: int, hi: int) -> str:
    """`dm-` and a short hash of the two sorted user ids: deterministic, a valid room name."""
    return "dm-" + hashlib.sha256(f"{lo}:{hi}".encode()).hexdigest()[:16]


class SqliteStore(Store):
    """`Store` on one SQLite file. `stats` exposes the writer's group-commit counters."""

    def __init__(self, path: str, *, max_pending_writes: int = 10000, batch_max: int = 512) -> None:
        if path == ":memory:" or path.startswith("file::memory:"):
            # Every thread has its own connection, and an in-memory database is per connection.
            raise ValueError("SqliteStore needs a file path, not an in-memory database")
        self._path = path
        self._max_pending_writes = max_pending_writes
        self._batch_max = batch_max
        self._writer: SqliteWriter | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._closing: asyncio.Future[None] | None = None

    @property
    def path(self) -> str:
        return self._path

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats if self._writer is not None else WriterStats()

    @property
    def timings(self) -> WriterTimings:
        return self._writer.timings if self._writer is not None else WriterTimings()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None or self._closing is not None:
            raise RuntimeError("a SqliteStore opens once")
        conn = await asyncio.to_thread(self._open_writer_conn)
        self._writer = SqliteWriter(
            conn, max_pending=self._max_pending_writes, batch_max=self._batch_max
        )
        self._writer.start()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="sqlite-read"
        )

    def _open_writer_conn(self) -> sqlite3.Connection:
        try:
            conn = connect(self._path, writer=True)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable("the message store cannot open its database") from exc
        try:
            apply_migrations(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def migrate(self) -> list[int]:
        # A connection of its own, like any other process would use: works before open() (the
        # CLI's `migrate`) and while the writer runs, serialised by SQLite's write lock.
        return await asyncio.to_thread(self._migrate_sync)

    def _migrate_sync(self) -> list[int]:
        conn = connect(self._path, writer=True)
        try:
            return apply_migrations(conn)
        finally:
            conn.close()

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        # Shielded: a caller cancelled mid-close must not leave the writer half drained.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            # The loop keeps running while we wait, so the last batch's futures resolve.
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, wait=True)
            with self._reader_conns_lock:
                for conn in self._reader_conns:
                    conn.close()
                self._reader_conns.clear()

    async def ping(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            raise StoreUnavailable("the message store is not accepting writes")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchall())

    # -- plumbing ------------------------------------------------------------------------------

    async def run_in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread, in the batch transaction and its own savepoint.

        Every write of this store goes through here; it is public for maintenance and tests.
        """
        if self._writer is None:
            raise StoreUnavailable("the message store is not open")
        return await self._writer.submit(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None or self._closing is not None:
            raise StoreUnavailable("the message store is not open")
        try:
            future = self._readers.submit(self._run_read, fn)
        except RuntimeError:  # the pool shut down between the check and the submit
            raise StoreUnavailable("the message store is not open") from None
        try:
            return await asyncio.wrap_future(future)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable("the message store could not complete the read") from exc

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, writer=False)
            self._local.conn = conn
            with self._reader_conns_lock:
                self._reader_conns.append(conn)
        return fn(conn)

    # -- users and tokens ------------------------------------------------------------------

    async def create_user(
        self, name: str, password_hash: str, *, is_admin: bool = False, is_bot: bool = False
    ) -> User:
        def job(conn: sqlite3.Connection) -> User:
            try:
                row = _one(
                    conn,
                    "INSERT INTO users (name, password_hash, is_admin, is_bot, created_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (name, password_hash, int(is_admin), int(is_bot), _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(exc, f"the user name {name!r} is taken", "") from None
            return User(id=row[0], name=name, is_admin=is_admin, is_bot=is_bot)

        return await self.run_in_writer(job)

    async def get_user(self, name: str) -> User | None:
        row = await self._read(
            lambda c: _one(c, f"SELECT {_USER} FROM users u WHERE name = ?", (name,))
        )
        return _user(row) if row else None

    async def get_password_hash(self, name: str) -> tuple[User, str] | None:
        sql = f"SELECT {_USER}, u.password_hash FROM users u WHERE name = ?"
        row = await self._read(lambda c: _one(c, sql, (name,)))
        return (_user(row), row[5]) if row else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )
            if cur.rowcount == 0:
                raise NotFound("no such user")

        await self.run_in_writer(job)

    async def set_disabled(self, name: str, disabled: bool) -> User:
        def job(conn: sqlite3.Connection) -> User:
            row = _one(
                conn,
                "UPDATE users SET disabled = ? WHERE name = ?"
                " RETURNING id, name, is_admin, disabled, is_bot",
                (int(disabled), name),
            )
            if row is None:
                raise NotFound(f"no user named {name!r}")
            return _user(row)

        return await self.run_in_writer(job)

    async def count_users(self) -> int:
        row = await self._read(lambda c: _one(c, "SELECT count(*) FROM users"))
        return int(row[0])

    async def list_users(self) -> list[UserListing]:
        rows = await self._read(lambda c: c.execute(LIST_USERS_SQL).fetchall())
        return [UserListing(_user(r), r[5], r[6], r[7]) for r in rows]

    async def add_token(self, user_id: int, token_hash: str, kind: TokenKind) -> None:
        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO tokens (hash, user_id, kind, created_at) VALUES (?, ?, ?, ?)",
                    (token_hash, user_id, kind, _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(exc, "that token already exists", "no such user") from None

        await self.run_in_writer(job)

    async def token_info(self, token_hash: str) -> TokenInfo | None:
        sql = (
            f"SELECT {_USER}, t.kind FROM tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.hash = ? AND t.revoked_at IS NULL"
        )
        row = await self._read(lambda c: _one(c, sql, (token_hash,)))
        if row is None:
            return None
        return TokenInfo(user=_user(row), token_hash=token_hash, kind=cast(TokenKind, row[5]))

    async def revoke_token(self, token_hash: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL",
                (_now_ms(), token_hash),
            )

        await self.run_in_writer(job)

    async def revoke_user_tokens(self, user_id: int, kind: TokenKind | None = None) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
                " AND (? IS NULL OR kind = ?)",
                (_now_ms(), user_id, kind, kind),
            )
            return cur.rowcount

        return await self.run_in_writer(job)

    async def invalid_tokens(self, token_hashes: Sequence[str]) -> dict[str, TokenInvalid]:
        if not token_hashes:
            return {}
        # One JSON array parameter rather than one `?` per hash: no variable limit to batch
        # around, and the statement text is the same for any number of hashes.
        hashes = json.dumps(list(token_hashes))
        rows = await self._read(lambda c: c.execute(_INVALID_TOKENS, (hashes,)).fetchall())
        return {row[0]: cast(TokenInvalid, row[1]) for row in rows}

    # -- rooms ---------------------------------------------------------------------------------

    async def create_room(self, name: str, kind: RoomKind, created_by: int | None) -> Room:
        def job(conn: sqlite3.Connection) -> Room:
            now = _now_ms()
            try:
                row = _one(
                    conn,
                    "INSERT INTO rooms (name, kind, created_by, created_at)"
                    " VALUES (?, ?, ?, ?) RETURNING id",
                    (name, kind, created_by, now),
                )
                if created_by is not None:
                    conn.execute("INSERT INTO members VALUES (?, ?, ?)", (row[0], created_by, now))
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(
                    exc, f"the room name {name!r} is taken", "no such user"
                ) from None
            return Room(id=row[0], name=name, kind=kind, created_by=created_by)

        return await self.run_in_writer(job)

    async def get_room(self, name: str) -> Room | None:
        row = await self._read(
            lambda c: _one(c, f"SELECT {_ROOM} FROM rooms r WHERE name = ?", (name,))
        )
        return _room(row) if row else None

    async def direct_room(self, a: User, b: User) -> tuple[Room, bool]:
        lo, hi = sorted((a.id, b.id))
        key = f"{lo}:{hi}"
        select = f"SELECT {_ROOM} FROM rooms r WHERE direct_key = ?"
        # Most calls find the room: answer those from a reader without queueing a write.
        row = await self._read(lambda c: _one(c, select, (key,)))
        if row is not None:
            return _room(row), False

        def job(conn: sqlite3.Connection) -> tuple[Room, bool]:
            now = _now_ms()
            try:
                # ON CONFLICT (direct_key): a racing call (or process) created it first, and
                # RETURNING yields no row.
                created = _one(
                    conn,
                    "INSERT INTO rooms (name, kind, created_by, created_at, direct_key)"
                    " VALUES (?, 'direct', ?, ?, ?) ON CONFLICT (direct_key) DO NOTHING"
                    " RETURNING id",
                    (direct_room_name(lo, hi), a.id, now, key),
                )
                if created is not None:
                    conn.executemany(
                        "INSERT INTO members VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        [(created[0], lo, now), (created[0], hi, now)],
                    )
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(
                    exc, "the direct room's name is taken by another room", "no such user"
                ) from None
            return _room(_one(conn, select, (key,))), created is not None

        return await self.run_in_writer(job)

    async def add_member(self, room_id: int, user_id: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            try:
                cur = conn.execute(
                    "INSERT INTO members VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (room_id, user_id, _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(exc, "", "no such room or user") from None
            return cur.rowcount > 0

        return await self.run_in_writer(job)

    async def is_member(self, room_id: int, user_id: int) -> bool:
        sql = "SELECT 1 FROM members WHERE room_id = ? AND user_id = ?"
        return await self._read(lambda c: _one(c, sql, (room_id, user_id))) is not None

    async def member_names(self, room_id: int) -> list[str]:
        sql = (
            "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id"
            " WHERE m.room_id = ? ORDER BY u.name"
        )
        rows = await self._read(lambda c: c.execute(sql, (room_id,)).fetchall())
        return [row[0] for row in rows]

    async def rooms_of_user(self, user_id: int) -> list[str]:
        sql = (
            "SELECT r.name FROM members m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.user_id = ? ORDER BY r.name"
        )
        rows = await self._read(lambda c: c.execute(sql, (user_id,)).fetchall())
        return [row[0] for row in rows]

    async def rooms_visible_to(self, user_id: int) -> list[RoomListing]:
        return await self._read(lambda conn: _rooms_visible_to(conn, user_id))

    # -- incoming webhooks ---------------------------------------------------------------------

    async def create_hook(
        self, room_id: int, bot_id: int, token_hash: str, created_by: int | None
    ) -> Hook:
        def job(conn: sqlite3.Connection) -> Hook:
            try:
                row = _one(
                    conn,
                    "INSERT INTO hooks (token_hash, room_id, bot_id, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (token_hash, room_id, bot_id, created_by, _now_ms()),
                )
            except sqlite3.IntegrityError as exc:
                raise _constraint_error(
                    exc, "that hook token already exists", "no such room or user"
                ) from None
            return _hook(_one(conn, f"{_HOOK} WHERE h.id = ?", (row[0],)))

        return await self.run_in_writer(job)

    async def hook_by_token(self, token_hash: str) -> Hook | None:
        sql = f"{_HOOK} WHERE h.token_hash = ? AND h.revoked_at IS NULL"
        row = await self._read(lambda c: _one(c, sql, (token_hash,)))
        return _hook(row) if row else None

    async def list_hooks(self) -> list[Hook]:
        rows = await self._read(lambda c: c.execute(f"{_HOOK} ORDER BY h.id").fetchall())
        return [_hook(row) for row in rows]

    async def revoke_hook(self, hook_id: int) -> Hook:
        def job(conn: sqlite3.Connection) -> Hook:
            conn.execute(
                "UPDATE hooks SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now_ms(), hook_id),
            )
            row = _one(conn, f"{_HOOK} WHERE h.id = ?", (hook_id,))
            if row is None:
                raise NotFound(f"no hook with id {hook_id}")
            return _hook(row)

        return await self.run_in_writer(job)

    # -- files (chatserver/store/sqlite_files.py) -----------------------------------------------

    async def add_file(self, file: NewFile) -> StoredFile:
        return await self.run_in_writer(lambda c: sqlite_files.insert_file(c, file))

    async def get_file(self, file_id: str) -> StoredFile | None:
        return await self._read(lambda c: sqlite_files.read_file(c, file_id))

    async def set_file_thumbnail(
        self, file_id: str, state: ThumbnailState, thumbnail_type: str | None,
        content_type: str | None = None,
    ) -> StoredFile:
        return await self.run_in_writer(lambda c: sqlite_files.update_thumbnail(
            c, file_id, state, thumbnail_type, content_type))

    async def delete_file(self, file_id: str) -> None:
        await self.run_in_writer(lambda c: sqlite_files.remove_file(c, file_id))

    # -- messages ------------------------------------------------------------------------------

    async def append_message(self, message: NewMessage) -> StoredMessage:
        def job(conn: sqlite3.Connection) -> StoredMessage:
            # The seq is allocated under the write lock, in the transaction that inserts the
            # message: a rolled-back job gives its seq back, so seqs stay gap-free.
            row = _one(
                conn,
                "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq, name",
                (message.room_id,),
            )
            if row is None:
                raise NotFound("no such room")
            seq, room = row
            message_id = secrets.token_urlsafe(12)
            ts = _now_ms()  # inside the transaction, moments before its COMMIT
            conn.execute(
                "INSERT INTO messages (room_id, seq, id, user_id, user_name, text, html, ts,"
                " stream, aborted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.room_id,
                    seq,
                    message_id,
                    message.user_id,
                    message.user,
                    message.text,
                    message.html,
                    ts,
                    message.stream,
                    int(message.aborted),
                ),
            )
            if message.thread is not None:  # a reply: its root was checked before the writer
                conn.execute(
                    "UPDATE messages SET thread = ? WHERE room_id = ? AND seq = ?",
                    (message.thread, message.room_id, seq),
                )
            sqlite_reads.insert_mentions(conn, message, seq)  # §10 mentions
            linked = sqlite_files.link_file(conn, message.file, message.room_id, seq)
            return StoredMessage(
                room=room,
                seq=seq,
                id=message_id,
                user=message.user,
                text=message.text,
                html=message.html,
                ts=format_ts(ts),
                stream=message.stream,
                aborted=message.aborted,
                file=linked,
                thread=message.thread,
                mentions=tuple(mention.name for mention in message.mentions),
                mentions_room=message.mentions_room,
            )

        return await self.run_in_writer(job)

    async def messages_after(self, room_id: int, after: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        sql = (
            f"SELECT {_MESSAGE} FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.room_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?"
        )

        def read(c: sqlite3.Connection) -> list[StoredMessage]:
            rows = c.execute(sql, (room_id, after, limit)).fetchall()
            return _complete_page(c, room_id, [_message(row) for row in rows])

        return await self._read(read)

    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        bound = before if before is not None else 1 << 62
        sql = (
            f"SELECT {_MESSAGE} FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.room_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?"
        )

        def read(c: sqlite3.Connection) -> list[StoredMessage]:
            rows = c.execute(sql, (room_id, bound, limit)).fetchall()
            return _complete_page(c, room_id, [_message(row) for row in reversed(rows)])

        return await self._read(read)

    async def latest_seq(self, room_id: int) -> int:
        row = await self._read(
            lambda c: _one(c, "SELECT last_seq FROM rooms WHERE id = ?", (room_id,))
        )
        return int(row[0]) if row else 0

    # -- mentions and read positions (chatserver/store/sqlite_reads.py) -----------------------

    async def user_ids(self, names: list[str]) -> dict[str, int]:
        return await self._read(lambda c: sqlite_reads.user_ids(c, names))

    async def set_read(self, user_id: int, room_id: int, seq: int) -> tuple[int, bool]:
        return await self.run_in_writer(lambda c: sqlite_reads.set_read(c, user_id, room_id, seq))

    async def read_states(self, user_id: int) -> dict[int, ReadState]:
        return await self._read(lambda c: sqlite_reads.read_states(c, user_id))

    # -- threads (chatserver/store/sqlite_threads.py) ----------------------------------------

    async def thread_root(self, room_id: int, seq: int) -> ThreadRoot | None:
        return await self._read(lambda c: sqlite_threads.thread_root(c, room_id, seq))

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
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        sql = sqlite_threads.page_sql(_MESSAGE, after)

        def read(c: sqlite3.Connection) -> list[StoredMessage]:
            rows = c.execute(sql, (room_id, root, bound, limit)).fetchall()
            ordered = rows if after else list(reversed(rows))
            # The same page completion as messages_after: a reply reads the same in its
            # thread as in the room's history.
            return _complete_page(c, room_id, [_message(row) for row in ordered])

        return await self._read(read)

    # -- room events (chatserver/store/sqlite_events.py) --------------------------------------

    async def edit_message(
        self, room_id: int, target: int, actor: User, text: str, html: str
    ) -> RoomEvent:
        return await self.run_in_writer(
            lambda c: sqlite_events.edit(c, room_id, target, actor, text, html))

    async def delete_message(
        self, room_id: int, target: int, actor: User
    ) -> tuple[RoomEvent, tuple[str, ...]]:
        return await self.run_in_writer(lambda c: sqlite_events.delete(c, room_id, target, actor))

    async def react(
        self, room_id: int, target: int, actor: User, emoji: str, add: bool
    ) -> RoomEvent | None:
        return await self.run_in_writer(
            lambda c: sqlite_events.react(c, room_id, target, actor, emoji, add))

    async def events_after(self, room_id: int, after: int, limit: int) -> list[RoomEvent]:
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        return await self._read(lambda c: sqlite_events.events_after(c, room_id, after, limit))

    # -- search (chatserver/store/search_sqlite.py) -----------------------------------------

    async def search_messages(
        self,
        user_id: int,
        query: SearchQuery,
        *,
        room_id: int | None = None,
        after: Cursor | None = None,
        limit: int = 20,
    ) -> SearchPage:
        return await self._read(
            lambda conn: search_sqlite.search(conn, user_id, query, room_id, after, limit)
        )

    # -- retention -----------------------------------------------------------------------------

    async def set_retention(self, room_id: int, days: int) -> None:
        if not 0 <= days <= MAX_RETENTION_DAYS:
            raise BadRequest(f"retention must be 0..{MAX_RETENTION_DAYS} days")

        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE rooms SET retention_days = ? WHERE id = ?", (days, room_id))
            if cur.rowcount == 0:
                raise NotFound("no such room")

        await self.run_in_writer(job)

    async def rooms_with_retention(self) -> list[tuple[Room, int]]:
        sql = (
            f"SELECT {_ROOM}, r.retention_days FROM rooms r"
            " WHERE r.retention_days > 0 ORDER BY r.id"
        )
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [(_room(row), int(row[4])) for row in rows]

    async def remove_messages_before(
        self, room_id: int, before_ms: int, limit: int
    ) -> RemovedMessages:
        if limit <= 0:
            return RemovedMessages()

        # In the writer, like every write: one job of the batch transaction, so it never
        # blocks the loop and appends queued meanwhile share its commit. The search index
        # follows by its DELETE trigger (0003).
        def job(conn: sqlite3.Connection) -> RemovedMessages:
            bound = _one(conn, _REMOVAL_BOUND, (room_id, before_ms, limit))[0]
            if bound is None:
                return RemovedMessages()
            files = conn.execute(
                "DELETE FROM files WHERE room_id = ? AND seq <= ? RETURNING id", (room_id, bound)
            ).fetchall()
            removed = conn.execute(
                "DELETE FROM messages WHERE room_id = ? AND seq <= ?", (room_id, bound)
            )
            sqlite_events.remove_through(conn, room_id, bound)  # their events and reactions
            # One writer per file: what this job saw eligible is what it removed.
            return RemovedMessages(removed.rowcount, tuple(row[0] for row in files),
                                   more=removed.rowcount >= limit)

        return await self.run_in_writer(job)



def _complete_page(c: sqlite3.Connection, room_id: int,
                   messages: list[StoredMessage]) -> list[StoredMessage]:
    """A page of messages as history shows them: with their files, current state after
    edits, deletions and reactions, mentions, and thread summaries (§10). Every read that
    returns messages goes through here, so history, replay, threads and export agree."""
    page = sqlite_files.with_files(c, room_id, messages)
    page = sqlite_events.with_state(c, room_id, page)
    page = sqlite_reads.with_mentions(c, room_id, page)
    return sqlite_threads.with_threads(c, room_id, page)

# The highest seq to remove from room ?1: among its oldest ?3 messages, the last one before the
# first stored at or after ?2 (NULL: none). A range of the primary key, so it costs ?3 rows
# whatever the room's size, and a second run (another instance) finds nothing left to remove.
# See Store.remove_messages_before.
_REMOVAL_BOUND = """
WITH oldest AS (SELECT seq, ts FROM messages WHERE room_id = ?1 ORDER BY seq LIMIT ?3)
SELECT max(seq) FROM oldest
WHERE seq < (SELECT coalesce(min(seq), 1 << 62) FROM oldest WHERE ts >= ?2)
"""


def _rooms_visible_to(conn: sqlite3.Connection, user_id: int) -> list[RoomListing]:
    # One read transaction, so the rooms and the direct rooms' members come from one snapshot.
    conn.execute("BEGIN")
    try:
        rooms = conn.execute(
            f"SELECT {_ROOM}, r.last_seq, m.user_id IS NOT NULL, r.retention_days FROM rooms r"
            " LEFT JOIN members m ON m.room_id = r.id AND m.user_id = ?"
            " WHERE r.kind = 'public' OR m.user_id IS NOT NULL ORDER BY r.name",
            (user_id,),
        ).fetchall()
        names: dict[int, list[str]] = {}
        for room_id, name in conn.execute(
            "SELECT other.room_id, u.name FROM members me"
            " JOIN rooms r ON r.id = me.room_id AND r.kind = 'direct'"
            " JOIN members other ON other.room_id = me.room_id"
            " JOIN users u ON u.id = other.user_id"
            " WHERE me.user_id = ? ORDER BY u.name",
            (user_id,),
        ):
            names.setdefault(room_id, []).append(name)
    finally:
        conn.execute("COMMIT")
    return [
        RoomListing(
            room=_room(row),
            member=bool(row[5]),
            last_seq=row[4],
            members=tuple(names.get(row[0], ())),
            retention_days=row[6],
        )
        for row in rooms
    ]


__all__ = ["SqliteStore", "WriterStats", "direct_room_name"]
