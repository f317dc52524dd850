"""Durability: an acknowledged message survives `kill -9`, and clients resume without a gap."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from tests.system.daemon import (
    Daemon,
    PipelinedSender,
    bearer,
    check_history,
    connect,
    to_thread,
)

pytestmark = pytest.mark.system

ROOM = "load"
CLIENTS = 3
PER_CLIENT = 200
WINDOW = 30  # sends in flight per client: pipelined, never waiting for each ack
KILL_AFTER_ACKS = 150  # of the 600: kill -9 right after this many acks arrived
RUN_TIMEOUT = 60.0
FRAME_TIMEOUT = 15.0


async def test_acked_messages_survive_kill_9_and_clients_resume_without_gap(
        server: Daemon) -> None:
    """Every message acked before a kill -9 is in history exactly once after a restart, seqs
    stay gap-free, and a client resuming with `join after` gets exactly what it missed."""
    tokens, _ = await asyncio.gather(
        to_thread(server.add_users, *(f"u{i}" for i in range(CLIENTS))),
        to_thread(server.cli_ok, "room", "create", ROOM))
    async with server.http_session() as http:
        clients = [await connect(http, server, tokens[f"u{i}"]) for i in range(CLIENTS)]
        for client in clients:
            assert (await client.join(ROOM))["seq"] == 0
        senders = [PipelinedSender(f"u{i}", client.ws, ROOM, PER_CLIENT, WINDOW)
                   for i, client in enumerate(clients)]
        in_flight_at_kill: list[int] = []

        def on_ack() -> None:
            if sum(len(s.acks) for s in senders) == KILL_AFTER_ACKS:
                os.kill(server.pid, signal.SIGKILL)
                in_flight_at_kill.append(sum(len(s.sent) - len(s.acks) for s in senders))

        await asyncio.wait_for(asyncio.gather(*(s.run(on_ack) for s in senders)), RUN_TIMEOUT)
        assert in_flight_at_kill, "the daemon was never killed: too few acks arrived"
        assert in_flight_at_kill[0] > 0, "no send was in flight at the kill; the test is moot"
        assert await to_thread(server.wait, 30) == -signal.SIGKILL
        for client in clients:
            await client.ws.close()
        assert not [e for s in senders for e in s.errors], "sends were answered with errors"
        assert sum(len(s.acks) for s in senders) >= KILL_AFTER_ACKS

        await to_thread(server.restart)
        history = await server.history(http, tokens["u0"], ROOM)
        check_history(history, senders)
        # What was delivered live before the kill was durable too, with the same seq.
        by_id = {m["id"]: m for m in history}
        for s in senders:
            assert [by_id[f["id"]]["seq"] for f in s.seen] == [f["seq"] for f in s.seen]

        # Something happens while they are away: posted over HTTP after the restart.
        for i in range(5):
            async with http.post(f"/api/rooms/{ROOM}/messages", json={"text": f"later {i}"},
                                 headers=bearer(tokens["u1"])) as reply:
                assert reply.status == 201, await reply.text()
        history = await server.history(http, tokens["u0"], ROOM)

        async def resume(sender: PipelinedSender) -> None:
            last_seen = sender.seen[-1]["seq"] if sender.seen else 0
            client = await connect(http, server, tokens[sender.name])
            ref = f"resume-{sender.name}"
            await client.send({"op": "join", "room": ROOM, "after": last_seen, "ref": ref})
            replayed: list[dict[str, Any]] = []
            while True:
                frame = await client.recv(FRAME_TIMEOUT)
                if frame["op"] == "joined":
                    break
                if frame["op"] == "message":
                    replayed.append(frame)
                else:
                    assert frame["op"] == "presence", f"unexpected frame while resuming: {frame}"
            assert frame["ref"] == ref and not frame.get("truncated"), frame
            assert frame["seq"] == len(history)
            assert [(m["seq"], m["id"], m["text"]) for m in replayed] == [
                (m["seq"], m["id"], m["text"]) for m in history[last_seen:]]
            await client.close()

        await asyncio.wait_for(asyncio.gather(*(resume(s) for s in senders)), RUN_TIMEOUT)

        # Live again after a resume: the next message follows with the next seq.
        client = await connect(http, server, tokens["u2"])
        await client.join(ROOM, after=len(history))
        ack = await client.say(ROOM, "back to live")
        assert ack["op"] == "ack" and ack["seq"] == len(history) + 1
        live = await client.recv_op("message", FRAME_TIMEOUT)
        assert (live["seq"], live["id"]) == (ack["seq"], ack["id"])
        await client.close()
