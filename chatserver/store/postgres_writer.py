"""The PostgreSQL store's write side: error mapping, migrations, and the group-commit writer.

`PostgresWriter` owns the message appends. Callers on the event loop queue a `NewMessage` and
await a future; ONE writer task takes every pending append (up to `batch_max`) and stores the
whole batch with ONE statement, so one round trip and one transaction per batch whatever its
size. That statement (`_BATCH_SQL`):

1. locks the batch's rooms rows `FOR UPDATE` in id order (every instance uses that order, so
   two instances' batches wait for each other instead of deadlocking),
2. bumps each room's `last_seq` by its number of messages and returns the old value: the row
   lock is held until the statement's implicit COMMIT, so concurrent instances allocate seqs
   one after the other, and a rolled-back batch gives its seqs back (gap-free),
3. inserts every message from arrays (`unnest`), numbering each room's messages in batch order,
4. returns each stored message's seq, ts and room name.

Appends to a room that does not exist are left out by the join and fail alone with `NotFound`.
A deadlock or serialization failure retries the batch. A batch whose statement fails or whose
outcome is unknown (timeout, lost connection) fails every one of its appends with
`StoreUnavailable`: nothing is acknowledged unless PostgreSQL confirmed its COMMIT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.resources
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# asyncpg ships no type information (no py.typed); its objects are Any here.
import asyncpg  # type: ignore[import-untyped]
from asyncpg.exceptions import _base as asyncpg_base  # type: ignore[import-untyped]

from chatserver.errors import BadRequest, NotFound, StoreUnavailable
from chatserver.store import postgres_files
from chatserver.store.base import (
    NewMessage,
    StoredMessage,
    WriterStats,
    WriterTimings,
    format_ts,
)
from chatserver.store.reads_sql import mention_rows

log = logging.getLogger(__name__)

_MIGRATIONS_PACKAGE = "chatserver.store.migrations.postgres"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_xact_lock key serialising migrations across instances: b"chatmigr" as an int64.
MIGRATION_LOCK_KEY = int.from_bytes(b"chatmigr", "big", signed=True)

_BATCH_RETRIES = 5  # deadlock / serialization failure: PostgreSQL rolled back, try again

# Everything talking to PostgreSQL can raise: connection trouble surfaces as OSError,
# TimeoutError, asyncpg.InterfaceError (closed connection or pool) or a PostgresError.
PG_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# A value PostgreSQL cannot store: asyncpg refuses to encode it (the client-side DataError), or
# the server rejects it (SQLSTATE class 22). The caller's fault, not the database's.
DATA_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg_base.DataError)
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# SQLSTATE classes meaning "cannot talk to the database now": connection exceptions, operator
# intervention (shutdown, restart, cancel), insufficient resources (too many connections).
_UNREACHABLE_CLASSES = ("08", "53", "57")

UNREACHABLE = "the message store's database is unreachable; try again shortly"
_FAILED = "the message store's database could not complete the request; try again shortly"
_STOPPED = "the message store stopped before it could confirm the write"
UNSTORABLE = "the request holds characters or values the message store cannot keep"


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The `StoreUnavailable` a caller sees for `exc`, one of `PG_ERRORS`.

    Connection trouble and timeouts say the database is unreachable; anything else (a bug,
    a schema that does not match) is logged with its traceback, since no caller will see it.
    """
    if isinstance(exc, asyncpg.PostgresError) and (
        (exc.sqlstate or "")[:2] not in _UNREACHABLE_CLASSES
    ):
        log.error("unexpected PostgreSQL error", exc_info=exc)
        return StoreUnavailable(_FAILED)
    return StoreUnavailable(UNREACHABLE)


@asynccontextmanager
async def acquire(pool: Any, timeout: float) -> AsyncIterator[Any]:
    """A pooled connection for one operation; getting it and using it share one `timeout`.

    A connection whose operation timed out (or was cancelled) is closed, not cancelled: asyncpg
    would first send a cancel request, which a hung server answers no sooner than the query.
    Raises TimeoutError past the deadline.
    """
    conn: Any = None
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.acquire()
            yield conn
    except (TimeoutError, asyncio.CancelledError):
        if conn is not None:
            conn.terminate()
        raise
    finally:
        if conn is not None:
            # A failed release has already closed the connection; the operation's own outcome
            # stands either way (a committed batch must not be reported as failed).
            with contextlib.suppress(Exception):
                await pool.release(conn, timeout=timeout)


# -- migrations ------------------------------------------------------------------------------


def _migrations() -> list[tuple[int, str]]:
    """(version, sql) of every packaged migration, ascending."""
    found: dict[int, str] = {}
    for entry in importlib.resources.files(_MIGRATIONS_PACKAGE).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two postgres migrations share version {version}")
        found[version] = entry.read_text(encoding="utf-8")
    return sorted(found.items())


async def apply_migrations(conn: Any) -> list[int]:
    """Apply pending migrations on `conn`, each in its own transaction; return their versions.

    Every transaction first takes a transaction-scoped advisory lock, so instances starting
    together migrate one at a time, and each re-reads `schema_migrations` under that lock: a
    version another instance just applied is skipped.
    """
    known = _migrations()
    newest = max((v for v, _ in known), default=0)
    applied: list[int] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            # Under the lock: two instances racing to create it would otherwise collide.
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                await conn.execute(
                    "CREATE TABLE schema_migrations"
                    " (version integer PRIMARY KEY, applied_at bigint NOT NULL)"
                )
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if done and max(done) > newest:
                raise RuntimeError(
                    f"the database schema (version {max(done)}) is newer than this chatserver"
                    f" ({newest})"
                )
            pending = [(v, sql) for v, sql in known if v not in done]
            if not pending:
                return applied
            version, script = pending[0]
            await conn.execute(script)  # no arguments: the simple protocol runs every statement
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time_ns() // 10**6
            )
        applied.append(version)


# -- the writer ------------------------------------------------------------------------------

_BATCH_SQL = """
WITH locked AS MATERIALIZED (
    SELECT id FROM rooms WHERE id = ANY($9::bigint[]) ORDER BY id FOR UPDATE
), bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + w.n
    FROM locked l, unnest($9::bigint[], $10::bigint[]) AS w(room_id, n)
    WHERE r.id = l.id AND w.room_id = l.id
    -- clock_timestamp() is read after the lock: one clock for every instance, so ts never goes
    -- backwards as seq grows within a room.
    RETURNING r.id, r.name, r.last_seq - w.n AS base,
              floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ts
), batch AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::boolean[], $12::bigint[])
        WITH ORDINALITY AS b(room_id, id, user_id, user_name, text, html, stream, aborted,
                             thread, ord)
), inserted AS (
    INSERT INTO messages (room_id, seq, id, user_id, user_name, text, html, ts, stream, aborted,
                          thread)
    SELECT b.room_id, k.base + row_number() OVER (PARTITION BY b.room_id ORDER BY b.ord),
           b.id, b.user_id, b.user_name, b.text, b.html, k.ts, b.stream, b.aborted, b.thread
    FROM batch b JOIN bumped k ON k.id = b.room_id
    RETURNING id, room_id, seq, ts
), linked AS (
    -- An upload's message links its file (postgres_files) in this same transaction. Unread
    -- by the final SELECT, but PostgreSQL runs every data-modifying WITH to completion.
    UPDATE files f SET seq = i.seq
    FROM inserted i JOIN unnest($2::text[], $11::text[]) AS l(message_id, file_id)
        ON l.message_id = i.id
    WHERE f.id = l.file_id AND f.room_id = i.room_id AND f.seq IS NULL
), mentioned AS (
    -- Mentions (reads_sql.mention_rows: one row per message and user id, 0 for @room), in
    -- the message's own transaction. Unread by the final SELECT, like `linked`.
    INSERT INTO message_mentions (room_id, seq, user_id)
    SELECT i.room_id, i.seq, mm.user_id
    FROM inserted i JOIN unnest($13::text[], $14::bigint[]) AS mm(message_id, user_id)
        ON mm.message_id = i.id
    ON CONFLICT DO NOTHING
)
SELECT i.id, i.seq, i.ts, k.name FROM inserted i JOIN bumped k ON k.id = i.room_id
"""


class _Append:
    __slots__ = ("future", "id", "message")

    def __init__(self, message: NewMessage, future: asyncio.Future[StoredMessage]) -> None:
        self.message = message
        self.future = future
        self.id = secrets.token_urlsafe(12)


_Outcome = StoredMessage | Exception


class PostgresWriter:
    """Group-commits appends through `pool`; `start()` on the loop, `stop()` to drain.

    `pool` should be the writer's own (one connection is all it uses): sharing the readers'
    pool would make appends queue behind a burst of history reads for a connection.
    """

    def __init__(self, pool: Any, *, max_pending: int, batch_max: int, timeout: float) -> None:
        if max_pending < 1 or batch_max < 1:
            raise ValueError("max_pending and batch_max must be at least 1")
        self._pool = pool
        self._max_pending = max_pending
        self._batch_max = batch_max
        self._timeout = timeout
        self._queue: collections.deque[_Append] = collections.deque()
        self._wake = asyncio.Event()
        self._pending = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._batches = 0
        self._transactions = 0
        self._jobs = 0
        self._failed_batches = 0
        self._retries = 0
        self._rejected = 0
        self._largest_batch = 0
        self._outage_failures = 0  # batches failed since the database was last reachable
        self.timings = WriterTimings()

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            batches=self._batches,
            transactions=self._transactions,
            jobs=self._jobs,
            failed_batches=self._failed_batches,
            retries=self._retries,
            rejected=self._rejected,
            largest_batch=self._largest_batch,
            pending=self._pending,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-writer")

    def is_alive(self) -> bool:
        """True while the task runs and takes new appends."""
        return self._task is not None and not self._task.done() and not self._stopping

    def submit(self, message: NewMessage) -> asyncio.Future[StoredMessage]:
        """Queue an append; raise `StoreUnavailable` at once when full or closed."""
        if self._stopping or self._task is None or self._task.done():
            self._rejected += 1
            raise StoreUnavailable("the message store is not accepting writes")
        if self._pending >= self._max_pending:
            self._rejected += 1
            raise StoreUnavailable("the message store is overloaded; try again shortly")
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(message, future))
        self._pending += 1
        self._wake.set()
        return future

    async def stop(self) -> None:
        """Refuse new appends, write every one already queued, then end the task."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task])

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        batch: list[_Append] = []
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                count = min(len(self._queue), self._batch_max)
                batch = [self._queue.popleft() for _ in range(count)]
                self._batches += 1
                self._jobs += count
                self._largest_batch = max(self._largest_batch, count)
                self.timings.batch_size.observe(count)
                try:
                    outcomes = await self._write(batch)
                except Exception:
                    # A bug in this module: fail this batch, keep serving the next ones.
                    log.exception("postgres write batch of %d crashed", len(batch))
                    outcomes = [StoreUnavailable(_FAILED) for _ in batch]
                self._deliver(batch, outcomes)
                if self._queue and _is_unreachable(outcomes[0]):
                    # The database just failed to answer: appends queued behind this batch
                    # would wait a full timeout each for the same answer. Fail them now.
                    owed = list(self._queue)
                    self._queue.clear()
                    self._deliver(owed, [StoreUnavailable(UNREACHABLE) for _ in owed])
                batch = []
        except BaseException:
            # Cancelled (the loop is shutting down without close()): nobody may await forever.
            owed = batch + list(self._queue)
            self._queue.clear()
            self._stopping = True
            self._deliver(owed, [StoreUnavailable(_STOPPED) for _ in owed])
            raise

    def _deliver(self, batch: list[_Append], outcomes: list[_Outcome]) -> None:
        """Wake a batch's callers in one step, in submission (so per-room seq) order."""
        # Freed before the waiters wake, so a resumed caller can submit again at once.
        self._pending -= len(batch)
        for append, outcome in zip(batch, outcomes, strict=True):
            if append.future.done():  # cancelled by its caller; the write happened anyway
                continue
            if isinstance(outcome, Exception):
                append.future.set_exception(outcome)
            else:
                append.future.set_result(outcome)

    async def _write(self, batch: list[_Append]) -> list[_Outcome]:
        started = time.perf_counter()
        for attempt in range(_BATCH_RETRIES):
            try:
                rows = await self._execute(batch)
            except _RETRYABLE:
                self._retries += 1
                log.warning("postgres write batch retried after a deadlock or serialization error")
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            except DATA_ERRORS:
                if len(batch) == 1:
                    self._failed_batches += 1
                    return [BadRequest(UNSTORABLE)]
                # One append holds a value PostgreSQL refuses: write them one by one so it
                # fails alone. Rare (text is checked before queueing), so simplicity wins.
                log.warning("postgres write batch of %d refused a value; isolating", len(batch))
                return [(await self._write([append]))[0] for append in batch]
            except PG_ERRORS as exc:
                self._failed_batches += 1
                error = unavailable(exc)
                if error.message == UNREACHABLE:
                    self._note_outage(exc)
                # One exception object per waiter: raising it fills in its own traceback.
                return [StoreUnavailable(error.message) for _ in batch]
            self._transactions += 1
            self.timings.commit_seconds.observe(time.perf_counter() - started)
            if self._outage_failures:
                log.warning(
                    "postgres writes work again, after %d failed batches",
                    self._outage_failures,
                )
                self._outage_failures = 0
            stored = {row[0]: row for row in rows}
            return [_stored(append, stored.get(append.id)) for append in batch]
        self._failed_batches += 1
        return [StoreUnavailable(_FAILED) for _ in batch]

    def _note_outage(self, exc: BaseException) -> None:
        # One line when an outage starts, one when it ends: under load every batch fails, and
        # a line per batch would flood the log.
        if self._outage_failures == 0:
            log.warning("postgres writes failing, the database is unreachable: %r", exc)
        self._outage_failures += 1

    async def _execute(self, batch: list[_Append]) -> list[Any]:
        rooms = collections.Counter(a.message.room_id for a in batch)
        room_ids = sorted(rooms)
        messages = [a.message for a in batch]
        async with acquire(self._pool, self._timeout) as conn:
            # No explicit transaction: one statement in autocommit is one transaction, and
            # BEGIN/COMMIT would cost two more round trips per batch.
            return list(
                await conn.fetch(
                    _BATCH_SQL,
                    [m.room_id for m in messages],
                    [a.id for a in batch],
                    [m.user_id for m in messages],
                    [m.user for m in messages],
                    [m.text for m in messages],
                    [m.html for m in messages],
                    [m.stream for m in messages],
                    [m.aborted for m in messages],
                    room_ids,
                    [rooms[r] for r in room_ids],
                    [m.file.id if m.file is not None else None for m in messages],
                    # A reply's root was checked before the writer (chatserver.threads).
                    [m.thread for m in messages],
                    *_mention_arrays(batch),  # $13, $14
                )
            )


def _mention_arrays(batch: list[_Append]) -> tuple[list[str], list[int]]:
    """The batch's mention rows flattened into two parallel arrays for `mentioned`."""
    message_ids: list[str] = []
    user_ids: list[int] = []
    for append in batch:
        for user_id in mention_rows(append.message):
            message_ids.append(append.id)
            user_ids.append(user_id)
    return message_ids, user_ids


def _stored(append: _Append, row: Any) -> _Outcome:
    if row is None:  # its room does not exist: left out of the batch, no seq spent
        return NotFound("no such room")
    message = append.message
    return StoredMessage(
        room=row[3],
        seq=row[1],
        id=append.id,
        user=message.user,
        text=message.text,
        html=message.html,
        ts=format_ts(row[2]),
        stream=message.stream,
        aborted=message.aborted,
        file=postgres_files.posted(message.file, row[1]),
        thread=message.thread,
        mentions=tuple(mention.name for mention in message.mentions),
        mentions_room=message.mentions_room,
    )


def _is_unreachable(outcome: _Outcome) -> bool:
    return isinstance(outcome, StoreUnavailable) and outcome.message == UNREACHABLE


__all__ = [
    "DATA_ERRORS",
    "MIGRATION_LOCK_KEY",
    "PG_ERRORS",
    "UNREACHABLE",
    "UNSTORABLE",
    "PostgresWriter",
    "WriterStats",
    "WriterTimings",
    "acquire",
    "apply_migrations",
    "unavailable",
]
