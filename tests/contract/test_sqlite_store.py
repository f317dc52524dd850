"""The SQLite backend beyond the shared contract: its writer thread, file locking, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chatserver
from chatserver.store.sqlite import SqliteStore
from tests.contract.test_store import history, new, user


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "chat.db"))
    await store.open()
    yield store
    await store.close()


async def test_sqlite_writes_run_on_one_writer_thread(sqlite_store: SqliteStore) -> None:
    """Every INSERT of every write, seen from inside SQLite, runs on one non-loop thread."""
    seen: list[tuple[int, str]] = []

    def record() -> int:
        seen.append((threading.get_ident(), threading.current_thread().name))
        return 0

    def install(conn: sqlite3.Connection) -> None:
        # Temporary triggers live on the writer's connection only: they fire on whatever
        # thread executes the statement that store methods issue.
        conn.create_function("record_thread", 0, record)
        for table in ("users", "rooms", "members", "messages"):
            conn.execute(
                f"CREATE TEMP TRIGGER spy_{table} AFTER INSERT ON main.{table}"
                " BEGIN SELECT record_thread(); END"
            )

    await sqlite_store.run_in_writer(install)
    alice = await user(sqlite_store, "alice")
    room = await sqlite_store.create_room("general", "public", alice.id)
    await asyncio.gather(*(sqlite_store.append_message(new(room, alice, "x")) for _ in range(20)))
    assert len(seen) == 1 + 2 + 20
    assert len(set(seen)) == 1
    ident, name = seen[0]
    assert ident != threading.get_ident() and name == "sqlite-writer"


async def test_sqlite_locked_database_does_not_block_the_loop(sqlite_store: SqliteStore) -> None:
    """While another process holds the write lock, appends wait off-loop and then succeed."""
    alice = await user(sqlite_store, "alice")
    room = await sqlite_store.create_room("general", "public", alice.id)
    admin = sqlite3.connect(sqlite_store.path, isolation_level=None)  # the admin CLI
    admin.execute("BEGIN IMMEDIATE")
    try:
        pending = asyncio.ensure_future(sqlite_store.append_message(new(room, alice, "m")))
        # Were the write run on the loop, the loop would stall until the lock is released,
        # which only this loop can do: the whole second, then busy_timeout's failure.
        worst, last = 0.0, time.monotonic()
        deadline = last + 1.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            worst, last = max(worst, now - last), now
        assert not pending.done()
        assert worst < 0.5
    finally:
        admin.execute("COMMIT")
        admin.close()
    assert (await pending).seq == 1


async def test_sqlite_stats_count_batches_and_refusals(tmp_path: Path) -> None:
    """stats reports batches, committed transactions, jobs, the largest batch and refusals."""
    store = SqliteStore(str(tmp_path / "chat.db"), max_pending_writes=3, batch_max=2)
    await store.open()
    try:
        alice = await user(store, "alice")
        room = await store.create_room("general", "public", alice.id)
        await asyncio.gather(
            *(store.append_message(new(room, alice, "x")) for i in range(50)),
            return_exceptions=True,
        )
        stats = store.stats
        assert stats.rejected >= 1 and stats.largest_batch <= 2
        assert stats.jobs == 2 + 50 - stats.rejected
        assert stats.transactions == stats.batches and stats.failed_batches == 0
        assert stats.pending == 0
    finally:
        await store.close()


def test_sqlite_rejects_in_memory_databases() -> None:
    """An in-memory database cannot be shared by the writer and reader threads."""
    with pytest.raises(ValueError):
        SqliteStore(":memory:")


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from chatserver.store.base import NewMessage
    from chatserver.store.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1])
        await store.open()
        alice = await store.create_user("alice", "h")
        room = await store.create_room("general", "public", alice.id)

        async def one(i: int) -> None:
            m = await store.append_message(
                NewMessage(room.id, room.name, alice.id, "alice", f"m{i}", "<p></p>"))
            print(m.id, flush=True)  # the ack

        i = 0
        while True:
            await asyncio.gather(*(one(i + k) for k in range(20)))
            i += 20

    asyncio.run(main())
    """
)


async def test_sqlite_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    """Every append acknowledged before the process is SIGKILLed is there after reopening."""
    path = str(tmp_path / "chat.db")
    env = {**os.environ, "PYTHONPATH": str(Path(chatserver.__file__).parent.parent)}
    acked: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, env=env, text=True
    ) as child:
        assert child.stdout is not None
        try:
            while len(acked) < 300:
                line = await asyncio.to_thread(child.stdout.readline)
                assert line, "the child exited early"
                acked.append(line.strip())
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        acked.extend(line.strip() for line in child.stdout.read().splitlines())
    store = SqliteStore(path)
    await store.open()
    try:
        room = await store.get_room("general")
        assert room is not None
        stored = await history(store, room)
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        assert set(acked) <= {m.id for m in stored}
    finally:
        await store.close()
