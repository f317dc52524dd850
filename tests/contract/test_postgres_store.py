"""The PostgreSQL backend beyond the shared contract: several instances on one database, group
commit, and a database that stops, crashes and comes back under a running store."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

import chatserver
from chatserver.errors import BadRequest, StoreUnavailable
from chatserver.store.base import NewMessage, Room, StoredMessage, User
from chatserver.store.postgres import PostgresStore
from tests.contract.test_store import history, new, user
from tests.services.postgres import PostgresServer

TIMEOUT = 2.0  # the stores' timeout in the outage tests: every failure must come within it


@pytest.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_dsn)
    await store.open()
    yield store
    await store.close()


async def rooms_of(store: PostgresStore, count: int) -> tuple[User, list[Room]]:
    alice = await user(store, "alice")
    return alice, [await store.create_room(f"room-{i}", "public", alice.id) for i in range(count)]


def assert_gap_free(stored: list[StoredMessage]) -> None:
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    assert [m.ts for m in stored] == sorted(m.ts for m in stored)  # one clock: ts never goes back


# -- several instances ------------------------------------------------------------------------


async def test_two_instances_appending_to_the_same_rooms_stay_gap_free(postgres_dsn: str) -> None:
    """2 x 300 concurrent appends from two stores across 3 rooms: seqs 1..200 per room, no
    message lost or doubled, and no deadlock (rooms are locked in one order everywhere)."""
    first, second = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)
    await first.open()
    await second.open()
    try:
        alice, rooms = await rooms_of(first, 3)
        results = await asyncio.gather(
            *(
                store.append_message(new(rooms[i % 3], alice, f"{name}-{i}"))
                for i in range(300)
                for store, name in ((first, "a"), (second, "b"))
            )
        )
        assert len({m.id for m in results}) == 600
        for room in rooms:
            stored = await history(second, room)
            assert_gap_free(stored)
            assert len(stored) == 200
            assert sorted(stored, key=lambda m: m.seq) == sorted(
                (m for m in results if m.room == room.name), key=lambda m: m.seq
            )
        assert first.stats.retries == second.stats.retries == 0
    finally:
        await first.close()
        await second.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from chatserver.store.base import NewMessage
    from chatserver.store.postgres import PostgresStore

    async def main() -> None:
        store = PostgresStore(sys.argv[1])
        await store.open()
        alice = await store.get_user("alice")
        rooms = [await store.get_room(f"room-{i}") for i in range(3)]
        print("ready", flush=True)
        sys.stdin.readline()  # go
        await asyncio.gather(*(
            store.append_message(NewMessage(
                rooms[i % 3].id, rooms[i % 3].name, alice.id, "alice", f"child-{i}", "<p></p>"))
            for i in range(300)))
        await store.close()

    asyncio.run(main())
    """
)


async def test_two_processes_appending_to_the_same_rooms_stay_gap_free(
    pg_store: PostgresStore, postgres_dsn: str
) -> None:
    """Another process appending to the same rooms at the same time never reuses or skips a seq."""
    alice, rooms = await rooms_of(pg_store, 3)
    env = {**os.environ, "PYTHONPATH": str(Path(chatserver.__file__).parent.parent)}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, postgres_dsn],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert (await asyncio.to_thread(child.stdout.readline)).strip() == "ready"
            child.stdin.write("go\n")
            child.stdin.flush()
            mine = await asyncio.gather(
                *(
                    pg_store.append_message(new(rooms[i % 3], alice, f"parent-{i}"))
                    for i in range(300)
                )
            )
            assert await asyncio.to_thread(child.wait, 30) == 0
        finally:
            if child.poll() is None:
                child.kill()
    assert len(mine) == 300
    for room in rooms:
        stored = await history(pg_store, room)
        assert_gap_free(stored)
        texts = collections.Counter(m.text.split("-")[0] for m in stored)
        assert texts == {"parent": 100, "child": 100}


async def test_instances_migrating_at_once_apply_each_version_once(postgres_dsn: str) -> None:
    """Five stores migrating one fresh database together: every version is applied exactly
    once (by whichever store got there first), each store's in ascending order."""
    stores = [PostgresStore(postgres_dsn) for _ in range(5)]
    applied = await asyncio.gather(*(store.migrate() for store in stores))
    every = sorted(version for versions in applied for version in versions)
    assert every and every == list(range(1, len(every) + 1)), applied
    assert all(versions == sorted(versions) for versions in applied), applied
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(every)
    finally:
        await conn.close()


# -- group commit -----------------------------------------------------------------------------


async def test_concurrent_appends_share_few_transactions(pg_store: PostgresStore) -> None:
    """1000 concurrent appends are written in a handful of one-statement batch transactions."""
    alice, rooms = await rooms_of(pg_store, 4)
    before = pg_store.stats
    await asyncio.gather(
        *(pg_store.append_message(new(rooms[i % 4], alice, f"m{i}")) for i in range(1000))
    )
    after = pg_store.stats
    assert after.jobs - before.jobs == 1000
    assert 1 <= after.transactions - before.transactions <= 10
    assert after.largest_batch >= 100
    assert after.failed_batches == after.retries == after.pending == 0


async def test_one_connection_pool_serves_writes_and_reads_together(postgres_dsn: str) -> None:
    """With pool_size=1 the writer and the readers share one connection, and both progress."""
    store = PostgresStore(postgres_dsn, pool_size=1)
    await store.open()
    try:
        alice, (room,) = await rooms_of(store, 1)
        ops: list[Awaitable[object]] = []
        for i in range(100):
            ops += [store.get_user("alice"), store.append_message(new(room, alice, f"m{i}"))]
        results = await asyncio.gather(*ops)
        assert all(r == alice for r in results[::2])
        assert_gap_free(await history(store, room))
    finally:
        await store.close()


async def test_nul_character_is_refused_alone(pg_store: PostgresStore) -> None:
    """A message with a NUL (PostgreSQL text cannot hold one) is a BadRequest; its batch is not."""
    alice, (room,) = await rooms_of(pg_store, 1)
    results = await asyncio.gather(
        *(pg_store.append_message(new(room, alice, "bad\x00" if i == 5 else f"m{i}"))
          for i in range(20)),
        return_exceptions=True,
    )
    assert isinstance(results[5], BadRequest)
    assert [m.seq for m in await history(pg_store, room)] == list(range(1, 20))


async def test_value_postgres_refuses_fails_only_its_own_append(pg_store: PostgresStore) -> None:
    """An append PostgreSQL cannot encode is retried alone and fails alone; the rest are stored."""
    alice, (room,) = await rooms_of(pg_store, 1)
    bad = NewMessage(room.id, room.name, 1 << 70, "alice", "overflow", "<p></p>")
    results = await asyncio.gather(
        *(pg_store.append_message(bad if i == 7 else new(room, alice, f"m{i}")) for i in range(30)),
        return_exceptions=True,
    )
    assert isinstance(results[7], BadRequest)
    assert all(isinstance(r, StoredMessage) for i, r in enumerate(results) if i != 7)
    assert_gap_free(await history(pg_store, room))
    assert len(await history(pg_store, room)) == 29


# -- an unreachable database ------------------------------------------------------------------


async def test_open_without_a_server_is_unavailable_fast(
    private_postgres_server: PostgresServer,
) -> None:
    """open() against a stopped server raises StoreUnavailable saying so, within the timeout."""
    private_postgres_server.stop()
    store = PostgresStore(private_postgres_server.dsn, timeout=TIMEOUT)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await store.open()
    assert time.monotonic() - started < TIMEOUT + 1
    await store.close()


class Sender:
    """Appends in rounds of 20 concurrent messages until stopped, recording acks and refusals."""

    def __init__(self, store: PostgresStore, room: Room, author: User) -> None:
        self.store, self.room, self.author = store, room, author
        self.acked: list[StoredMessage] = []
        self.refused: list[BaseException] = []
        self.sent = 0
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            texts = [f"m{self.sent + k}" for k in range(20)]
            self.sent += 20
            results = await asyncio.gather(
                *(self.store.append_message(new(self.room, self.author, t)) for t in texts),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, StoredMessage):
                    self.acked.append(result)
                else:
                    self.refused.append(result)
            if not isinstance(results[-1], StoredMessage):
                await asyncio.sleep(0.01)  # the database is away: do not spin

    async def wait_for(self, acks: int) -> None:
        while len(self.acked) < acks:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def test_stopped_database_is_unavailable_then_the_same_store_recovers(
    private_postgres_server: PostgresServer,
) -> None:
    """With PostgreSQL stopped, appends, reads and ping raise StoreUnavailable within the
    timeout and nothing unstored is acked; once it is back, the same store object works again."""
    server = private_postgres_server
    store = PostgresStore(server.dsn, timeout=TIMEOUT)
    await store.open()
    try:
        alice, (room,) = await rooms_of(store, 1)
        sender = Sender(store, room, alice)
        await sender.wait_for(200)
        await asyncio.to_thread(server.stop)  # fast shutdown, under the running sender
        refused_before = len(sender.refused)
        while len(sender.refused) < refused_before + 40:
            await asyncio.sleep(0.01)
        await sender.stop()
        assert all(isinstance(r, StoreUnavailable) for r in sender.refused)

        for call in (
            lambda: store.append_message(new(room, alice, "while down")),
            lambda: store.messages_after(room.id, 0, 10),
            lambda: store.latest_seq(room.id),
            lambda: store.get_user("alice"),
            lambda: store.create_user("bob", "h"),
            store.ping,
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await call()
            assert time.monotonic() - started < TIMEOUT + 1

        await asyncio.to_thread(server.start)  # same port, same data
        after = await store.append_message(new(room, alice, "back"))
        await store.ping()
        stored = await history(store, room)
        assert_gap_free(stored)
        assert after == stored[-1]
        assert {m.id for m in sender.acked} <= {m.id for m in stored}
    finally:
        await store.close()


async def test_acked_appends_survive_kill_9_of_the_database_exactly_once(
    private_postgres_server: PostgresServer,
) -> None:
    """After SIGKILL of every PostgreSQL process under load, a restart has each acked message
    exactly once, seqs gap-free, and the store that saw the crash writes on."""
    server = private_postgres_server
    store = PostgresStore(server.dsn, timeout=TIMEOUT)
    await store.open()
    try:
        alice, (room,) = await rooms_of(store, 1)
        sender = Sender(store, room, alice)
        await sender.wait_for(300)
        await asyncio.to_thread(server.kill)
        refused_before = len(sender.refused)
        while len(sender.refused) < refused_before + 20:
            await asyncio.sleep(0.01)
        await sender.stop()
        await asyncio.to_thread(server.start)  # crash recovery from the WAL

        stored = await history(store, room)
        assert_gap_free(stored)
        texts = collections.Counter(m.text for m in stored)
        assert max(texts.values()) == 1
        by_id = {m.id: m for m in stored}
        assert all(by_id.get(m.id) == m for m in sender.acked)
        assert (await store.append_message(new(room, alice, "after"))).seq == len(stored) + 1
    finally:
        await store.close()


async def test_hung_database_fails_operations_within_the_timeout(
    private_postgres_server: PostgresServer,
) -> None:
    """With every PostgreSQL process frozen (a hung host), appends and reads raise
    StoreUnavailable within the timeout; thawed, the same store works again, gap-free."""
    server = private_postgres_server
    store = PostgresStore(server.dsn, timeout=1.0)
    await store.open()
    try:
        alice, (room,) = await rooms_of(store, 1)
        acked = [await store.append_message(new(room, alice, f"m{i}")) for i in range(5)]
        server.freeze()
        started = time.monotonic()
        results = await asyncio.gather(
            store.append_message(new(room, alice, "while hung")),
            store.messages_after(room.id, 0, 10),
            store.get_user("alice"),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert elapsed < 1.0 + 0.5
        server.thaw()
        acked.append(await store.append_message(new(room, alice, "thawed")))
        stored = await history(store, room)
        assert_gap_free(stored)
        # The hung append's outcome was unknown: refused, yet it may have committed on thaw.
        assert {m.id for m in acked} <= {m.id for m in stored}
        assert len(stored) in (len(acked), len(acked) + 1)
    finally:
        server.thaw()
        await store.close()
