"""`chatserver export` and `chatserver room retention` against a running daemon's database:
the admin CLI in its own process while the server serves."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.system.daemon import Daemon, bearer, to_thread

pytestmark = pytest.mark.system


async def test_export_and_retention_work_beside_the_running_server(server: Daemon) -> None:
    """While the daemon runs, `export ROOM` prints its messages exactly as HTTP history gives
    them, and `room retention` shows in GET /api/rooms."""
    token, _ = await asyncio.gather(to_thread(server.add_user, "alice"),
                                    to_thread(server.cli_ok, "room", "create", "general"))
    async with server.http_session() as http:
        for i in range(3):
            async with http.post("/api/rooms/general/messages", json={"text": f"**hi** {i}"},
                                 headers=bearer(token)) as reply:
                assert reply.status == 201, await reply.text()
        history = await server.history(http, token, "general")
        printed, _ = await asyncio.gather(
            to_thread(server.cli_ok, "export", "general"),
            to_thread(server.cli_ok, "room", "retention", "general", "7"))
        assert [orjson.loads(line) for line in printed.splitlines()] == history
        async with http.get("/api/rooms", headers=bearer(token)) as reply:
            rooms = {r["name"]: r for r in (await reply.json())["rooms"]}
    assert (rooms["general"]["retention_days"], rooms["general"]["seq"]) == (7, 3)
