"""Retention on a running server: the background job removes messages older than their room
keeps, in batches, and history, resume and the room listing follow; `chatserver room
retention` sets it and validates DAYS."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import cast

import orjson
import pytest

from chatserver import cli, retention
from chatserver.errors import StoreUnavailable
from chatserver.store.base import Room, Store
from chatserver.store.sqlite import SqliteStore

from .conftest import Chat, WsClient

WAIT = 5.0


@pytest.fixture
def fast_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job sweeps at once and every 50 ms, two messages per batch."""
    monkeypatch.setattr(retention, "FIRST_RUN_SECONDS", 0.0)
    monkeypatch.setattr(retention, "INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    monkeypatch.setattr(retention, "BATCH_PAUSE_SECONDS", 0.0)


async def _backdate(chat: Chat, room: Room, up_to_seq: int, days: int) -> None:
    """Make the room's messages up to `up_to_seq` look `days` days older."""
    store = chat.ctx.store
    assert isinstance(store, SqliteStore)
    await store.run_in_writer(lambda c: c.execute(
        "UPDATE messages SET ts = ts - ? WHERE room_id = ? AND seq <= ?",
        (days * retention.DAY_MS, room.id, up_to_seq)))


async def _seqs(chat: Chat, room: Room) -> list[int]:
    return [m.seq for m in await chat.ctx.store.messages_after(room.id, 0, 100)]


async def _replayed(client: WsClient, room: str, after: int) -> list[int]:
    """The seqs `join` with `after` replays before `joined`."""
    await client.send({"op": "join", "room": room, "after": after, "ref": "resume"})
    seqs = []
    while (frame := await client.recv())["op"] != "joined":
        if frame["op"] == "message":
            seqs.append(frame["seq"])
    return seqs


async def test_job_removes_expired_messages_and_history_and_resume_skip_them(
        fast_retention: None, chat: Chat, caplog: pytest.LogCaptureFixture) -> None:
    """With 1 day of retention, the job removes the room's messages older than a day (and no
    other room's), logs how many; history and `join after` skip them, `GET /api/rooms` shows
    retention_days with the seq unchanged, and the next message takes the next seq."""
    caplog.set_level(logging.INFO, logger="chatserver.retention")
    token = await chat.user("alice")
    alice = await chat.ws(token)
    rooms = {}
    for name in ("general", "archive"):
        await chat.room(name)
        await alice.join(name)
        for i in range(5):
            await alice.say(name, f"{name} {i}")
        rooms[name] = await chat.ctx.rooms.get(name)
        await _backdate(chat, rooms[name], 3, days=2)

    await chat.ctx.store.set_retention(rooms["general"].id, 1)

    deadline = time.monotonic() + WAIT
    while await _seqs(chat, rooms["general"]) != [4, 5]:
        assert time.monotonic() < deadline, await _seqs(chat, rooms["general"])
        await asyncio.sleep(0.02)
    assert await _seqs(chat, rooms["archive"]) == [1, 2, 3, 4, 5]
    logged = [r.getMessage() for r in caplog.records if r.name == "chatserver.retention"]
    assert "retention: removed 3 messages older than 1 days from room general" in logged

    history = await alice.request({"op": "history", "room": "general"}, "history")
    assert ([m["seq"] for m in history["messages"]], history["more"]) == ([4, 5], False)
    assert await _replayed(await chat.ws(token), "general", 0) == [4, 5]
    assert await _replayed(await chat.ws(token), "general", 2) == [4, 5]
    async with chat.client.get("/api/rooms", headers=chat.auth(token)) as reply:
        listed = {r["name"]: r for r in (await reply.json())["rooms"]}
    assert {name: (r["retention_days"], r["seq"]) for name, r in listed.items()} == {
        "general": (1, 5), "archive": (0, 5)}
    assert (await alice.say("general", "kept"))["seq"] == 6
    await asyncio.sleep(0.1)  # two more sweeps
    assert await _seqs(chat, rooms["general"]) == [4, 5, 6]


class _FlakyStore:
    """A store double whose room listing fails twice (unavailable, then a bug), then works."""

    def __init__(self) -> None:
        self.calls = 0

    async def rooms_with_retention(self) -> list[tuple[Room, int]]:
        self.calls += 1
        if self.calls == 1:
            raise StoreUnavailable("the message store is overloaded; try again shortly")
        if self.calls == 2:
            raise RuntimeError("a bug")
        return []


async def test_job_survives_an_unavailable_store_and_a_failing_sweep(
        fast_retention: None, caplog: pytest.LogCaptureFixture) -> None:
    """A sweep that fails (store unavailable: a warning; anything else: logged with its
    traceback) is retried at the next interval; the job only ends when cancelled."""
    store = _FlakyStore()
    job = asyncio.create_task(retention.run(cast(Store, store)))
    deadline = time.monotonic() + WAIT
    while store.calls < 3:
        assert time.monotonic() < deadline and not job.done()
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    levels = [(r.levelname, r.exc_info is not None) for r in caplog.records
              if r.name == "chatserver.retention"]
    assert levels == [("WARNING", False), ("ERROR", True)]


def test_room_retention_command_sets_days_and_refuses_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`room retention ROOM DAYS` stores DAYS (0: forever); DAYS outside 0..36500 or not a
    number is usage (exit 2), an unknown room exit 1 naming it."""
    config = tmp_path / "chat.toml"
    db = str(tmp_path / "chat.db")
    config.write_text(f"[store]\npath = {orjson.dumps(db).decode()}\n")

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(["--config", str(config), *args])
        return code, capsys.readouterr().err

    async def kept() -> list[tuple[str, int]]:
        store = SqliteStore(db)
        await store.open()
        try:
            return [(room.name, days) for room, days in await store.rooms_with_retention()]
        finally:
            await store.close()

    assert run("room", "create", "general")[0] == 0
    code, err = run("room", "retention", "general", "30")
    assert code == 0 and "30 days" in err, err
    assert asyncio.run(kept()) == [("general", 30)]
    code, err = run("room", "retention", "general", "0")
    assert code == 0 and "forever" in err, err
    assert asyncio.run(kept()) == []
    for bad in ("-1", "36501", "x", "1.5"):
        with pytest.raises(SystemExit) as usage:
            run("room", "retention", "general", bad)
        assert usage.value.code == 2
        assert "0 (keep forever) to 36500" in capsys.readouterr().err
    code, err = run("room", "retention", "nosuch", "1")
    assert code == 1 and "nosuch" in err, err

