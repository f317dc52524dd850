"""The web UI in Debian's headless chromium against the real daemon: what happens live —
a server restart under the page, and a message streamed token by token."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser.ui import MESSAGES, ChatServer, open_chat, room_name

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.asyncio(loop_scope="session")]


async def test_a_reconnect_after_a_server_restart_loses_nothing(
        browser: Any, chat_server: ChatServer, artifacts: Path) -> None:
    """When the server restarts, the page shows "reconnecting…", comes back by itself, and
    shows every message sent while it was away, in order, each once."""
    room = room_name("restart")
    await chat_server.create_room("bob", room)
    before = [f"before {i}" for i in range(3)]
    for text in before:
        await chat_server.say("bob", room, text)
    alice = await open_chat(browser, chat_server, "alice", room=room)
    try:
        bodies = alice.page.locator(f"{MESSAGES} .msg-body")
        await expect(bodies).to_have_text(before)

        daemon = chat_server.daemon
        daemon.kill(signal.SIGTERM)  # closes every socket with 1001, then exits
        status = alice.page.locator("#conn-status")
        await expect(status).to_have_attribute("data-state", "reconnecting")
        await expect(status).to_contain_text("reconnecting…")
        await alice.page.screenshot(path=artifacts / "reconnecting.png")
        # Keep the page off the network while bob talks: what it missed must come back
        # through its resume (`join` with `after`), not as live frames.
        await alice.context.set_offline(True)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        await asyncio.to_thread(daemon.start)
        away = [f"while away {i}" for i in range(5)]
        for text in away:
            await chat_server.say("bob", room, text)
        await alice.context.set_offline(False)
        await expect(status).to_have_attribute("data-state", "connected")
        await chat_server.say("bob", room, "after")

        await expect(bodies).to_have_text([*before, *away, "after"])
        seqs = [int(seq) for seq in await alice.page.locator(MESSAGES).evaluate_all(
            "items => items.map((item) => item.dataset.seq)")]
        assert seqs == sorted(set(seqs)), f"seqs out of order or twice: {seqs}"
        alice.check_no_errors()
    finally:
        await alice.close()


async def test_a_streamed_message_grows_in_place_and_settles(
        browser: Any, chat_server: ChatServer) -> None:
    """A message streamed by a bot grows in one place as its deltas arrive (as plain text)
    and is replaced by the stored message, rendered from its html, when the stream ends."""
    room = room_name("stream")
    await chat_server.create_room("bob", room)
    alice = await open_chat(browser, chat_server, "alice", room=room)
    async with aiohttp.ClientSession() as session:
        bob = await chat_server.socket(session, "bob")
        try:
            await bob.request({"op": "join", "room": room})
            stream = (await bob.request({"op": "stream_start", "room": room}))["stream"]
            placeholder = alice.page.locator(f"#stream-list li[data-stream='{stream}']")
            await expect(placeholder).to_contain_text("bob is writing…")
            node = await placeholder.element_handle()
            text = ""
            for delta in ("**Streaming**", " grows", " in place"):
                await bob.delta(stream, delta)
                text += delta
                await expect(placeholder.locator(".stream-text")).to_have_text(text)
                # The same element, grown: not a new one per delta.
                assert await node.evaluate("(li) => li.isConnected")
            end = await bob.request({"op": "stream_end", "stream": stream})

            await expect(placeholder).to_have_count(0)
            final = alice.page.locator(f"{MESSAGES}[data-seq='{end['seq']}'] .msg-body")
            await expect(final).to_have_text("Streaming grows in place")
            await expect(final.locator("strong")).to_have_text("Streaming")
            assert await alice.texts() == ["Streaming grows in place"]
            alice.check_no_errors()
        finally:
            await bob.close()
            await alice.close()
