"""The first end-to-end path: hello, join, send, ack, message."""

from tests.integration.conftest import Chat


async def test_send_is_acked_then_delivered_to_every_member(chat: Chat) -> None:
    """A sent message is acknowledged to its sender, then delivered to every joined member."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    assert (await a.join("general"))["seq"] == 0
    await b.join("general")
    ack = await a.say("general", "hello **bob**")
    assert ack["op"] == "ack" and ack["seq"] == 1
    got = await b.recv_op("message")
    assert got["seq"] == 1 and got["user"] == "alice"
    assert got["html"] == "<p>hello <strong>bob</strong></p>\n"
    own = await a.recv_op("message")
    assert own["id"] == ack["id"]
