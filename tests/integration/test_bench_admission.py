"""The benchmark harness connects like a well-behaved client: an upgrade refused with 503 (the
server's overload guard, e.g. a stall at start-up on a busy machine) is tried again after its
Retry-After and counted, instead of failing the run; any other refusal fails at once."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.benchlib_import import benchlib

client = benchlib("client")


def refusing_server(refusals: int, status: int = 503) -> tuple[web.Application, list[int]]:
    """Answers the first `refusals` upgrades with `status` (Retry-After 0.05 s), then upgrades
    and says hello. The list records every answer's status."""
    answers: list[int] = []

    async def ws(request: web.Request) -> web.StreamResponse:
        if len(answers) < refusals:
            answers.append(status)
            return web.Response(status=status, headers={"Retry-After": "0.05"})
        answers.append(101)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_json({"op": "hello", "user": "bench", "conn": "c1"})
        await sock.receive()  # until the client closes
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    return app, answers


async def test_a_503_is_retried_after_its_retry_after_and_counted(aiohttp_server: Any) -> None:
    app, answers = refusing_server(2)
    server = await aiohttp_server(app)
    refusals = client.Refusals()
    conn = await client.connect_admitted("127.0.0.1", server.port, "t", client.NULL_RECORDER,
                                         5.0, refusals=refusals)
    try:
        assert conn.hello.result()["op"] == "hello"
        assert answers == [503, 503, 101]
        assert refusals.count == 2
    finally:
        conn.close()


async def test_other_refusals_fail_at_once(aiohttp_server: Any) -> None:
    app, answers = refusing_server(5, status=401)
    server = await aiohttp_server(app)
    with pytest.raises(client.ServerClosed, match="401"):
        await client.connect_admitted("127.0.0.1", server.port, "t", client.NULL_RECORDER, 5.0)
    assert answers == [401]


async def test_503s_past_the_timeout_fail_with_the_refusal(aiohttp_server: Any) -> None:
    app, answers = refusing_server(1000)
    server = await aiohttp_server(app)
    refusals = client.Refusals()
    with pytest.raises(client.ServerClosed, match="503"):
        await client.connect_admitted("127.0.0.1", server.port, "t", client.NULL_RECORDER,
                                      0.3, refusals=refusals)
    assert 1 <= refusals.count < len(answers) <= 7
