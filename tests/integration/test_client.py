"""The Python client: reconnects with backoff and resumes without gap or duplicate."""

from __future__ import annotations

import asyncio

from chatserver.client import ChatClient, ChatClientError
from tests.integration.conftest import Chat


async def _next_messages(client: ChatClient, count: int) -> list[dict[str, object]]:
    got = []
    iterator = client.messages()
    while len(got) < count:
        got.append(await asyncio.wait_for(iterator.__anext__(), 10))
    return got


async def test_client_resumes_after_the_server_closes_its_connection(chat: Chat) -> None:
    """After a 1001 close the client reconnects, re-joins with `after`, and yields the
    messages sent while it was away exactly once, in order."""
    token = await chat.user("alice")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token, backoff_base=0.05) as client:
        await client.join("general")
        first = await client.send("general", "one")
        assert first["seq"] == 1
        assert [m["text"] for m in await _next_messages(client, 1)] == ["one"]
        for session in chat.ctx.connections:
            session.outbox.close(1001, "going away")
        writer = await chat.ws(token)
        for text in ("two", "three"):
            await writer.say("general", text)
        got = await _next_messages(client, 2)
        assert [(m["seq"], m["text"]) for m in got] == [(2, "two"), (3, "three")]
        assert client.reconnects >= 1
        await writer.say("general", "four")
        assert [m["text"] for m in await _next_messages(client, 1)] == ["four"]
        assert await client.ping() < 10


async def test_client_raises_the_servers_error(chat: Chat) -> None:
    """A request answered by an `error` frame raises ChatClientError with its code."""
    token = await chat.user("alice")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token) as client:
        try:
            await client.join("missing")
        except ChatClientError as error:
            assert error.code == "not_found"
        else:
            raise AssertionError("join of a missing room should fail")


async def test_waiting_for_a_message_with_a_timeout_loses_nothing(chat: Chat) -> None:
    """`wait_for(anext(messages), t)` timing out leaves the iterator working: the message
    sent afterwards still arrives on the same iterator (an async generator would have been
    closed by the cancellation)."""
    token = await chat.user("alice")
    await chat.room("general")
    url = str(chat.client.make_url("/ws"))
    async with ChatClient(url, token, backoff_base=0.05) as client:
        await client.join("general")
        iterator = client.messages()
        for _ in range(3):
            try:
                await asyncio.wait_for(iterator.__anext__(), 0.05)
            except TimeoutError:
                pass
            else:
                raise AssertionError("nothing was sent yet")
        await client.send("general", "late")
        message = await asyncio.wait_for(iterator.__anext__(), 10)
        assert message["text"] == "late"
