"""The web UI's message search: the box in the sidebar, ranked results with the matches
marked, and a result opening its message (in its thread for a reply)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.ui import MESSAGES, ChatServer, open_chat, room_name

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.asyncio(loop_scope="session")]


async def test_a_search_finds_messages_and_replies_and_opens_them(
        browser: Any, chat_server: ChatServer) -> None:
    """A word unique to this test finds a message and a thread reply; the snippet marks the
    word and shows markup as text; clicking the message scrolls to it in its room, clicking
    the reply opens its thread; a query the server refuses shows the server's reason."""
    room, other = room_name("search"), room_name("elsewhere")
    word = f"zebra{room[-8:]}"  # found by this test's messages only
    await chat_server.create_room("bob", room, members=("alice",))
    await chat_server.create_room("alice", other)
    root = await chat_server.say("bob", room, f"the {word} deploy failed <b>badly</b>")
    for i in range(30):
        await chat_server.say("bob", room, f"filler {i}")
    await chat_server.call("bob", "POST", f"/api/rooms/{room}/messages",
                           {"text": f"{word} rolled back", "thread": root["seq"]})
    alice = await open_chat(browser, chat_server, "alice", room=other)
    page = alice.page
    try:
        await page.get_by_label("Search messages").fill(word)
        await page.get_by_label("Search messages").press("Enter")
        results = page.locator("#search-results .search-result")
        await expect(results).to_have_count(2)
        await expect(page.locator("#search-results mark").first).to_have_text(word)
        await expect(results.filter(has_text="<b>badly</b>")).to_have_count(1)
        assert await page.locator("#search-results b").count() == 0

        await results.filter(has_text="deploy failed").click()
        await expect(page.locator("#room-title")).to_have_text(f"#{room}")
        found = page.locator(f"{MESSAGES}[data-seq='{root['seq']}']")
        await expect(found).to_be_in_viewport()

        await results.filter(has_text="rolled back").click()
        await expect(page.locator("#thread-panel")).to_be_visible()
        await expect(page.locator("#thread-root li.msg .msg-body")).to_contain_text("deploy")
        await expect(page.locator("#thread-list li.msg .msg-body")).to_have_text(
            [f"{word} rolled back"])

        await page.get_by_label("Search messages").fill("!!!")
        await page.get_by_label("Search messages").press("Enter")
        await expect(page.locator("#search-status")).to_have_text(re.compile(r"\w"))
        await expect(results).to_have_count(0)
        alice.check_no_errors()
    finally:
        await alice.close()
