"""The web UI in Debian's headless chromium against the real daemon: people chatting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.ui import MESSAGES, PHONE, ChatServer, eventually, open_chat, room_name

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.asyncio(loop_scope="session")]


async def test_two_users_chat_in_a_room(browser: Any, chat_server: ChatServer,
                                        artifacts: Path) -> None:
    """Two people in one room see each other's messages live, rendered from the sanitised
    html, typing, presence (who was online already, then changes) and unread counts — one
    logged in through the form, one on a phone."""
    room, side = room_name("lobby"), room_name("side")
    # A user of this test only: the unread total in the title counts this test's rooms alone.
    bob_name = await chat_server.new_user("bob")
    await chat_server.create_room("alice", room, members=(bob_name,))
    await chat_server.create_room("alice", side, members=(bob_name,))
    alice = await open_chat(browser, chat_server, "alice", room=room, via_form=True)
    bob = await open_chat(browser, chat_server, bob_name, room=room, viewport=PHONE)
    try:
        # alice was online before bob's page loaded, so no change frame tells him: his page
        # shows her online from the room's presence snapshot (HTTP, which is never shed).
        alice_status = bob.page.locator("#people-list .person", has_text="alice").locator(
            ".person-status")
        await expect(alice_status).to_have_text("online")

        # bob's first connection is announced to the members of his rooms (again on reload:
        # presence is shed while the server's loop lags).
        async def reconnect_bob(attempt: int) -> None:
            if attempt:
                await bob.page.reload()

        bob_status = alice.page.locator("#people-list .person", has_text=bob_name).locator(
            ".person-status")
        await eventually(reconnect_bob, lambda ms: expect(bob_status).to_have_text(
            "online", timeout=ms))

        await alice.send("hello **bob** <script>window.pwned = 1</script>")
        body = bob.page.locator(f"{MESSAGES} .msg-body").last
        await expect(body).to_have_text("hello bob <script>window.pwned = 1</script>")
        await expect(body.locator("strong")).to_have_text("bob")
        assert await bob.page.locator("#message-list script").count() == 0
        assert await bob.page.evaluate("window.pwned") is None
        await expect(bob.page.locator(f"{MESSAGES} .msg-user").last).to_have_text("alice")

        async def bob_types(attempt: int) -> None:
            await bob.page.locator("#composer-input").press_sequentially("hi"[attempt % 2])

        await eventually(bob_types, lambda ms: expect(alice.page.locator("#typing")).to_have_text(
            f"{bob_name} is typing…", timeout=ms))
        await bob.page.locator("#composer-input").fill("hi")
        await bob.page.locator("#composer-input").press("Enter")
        await expect(alice.page.locator(f"{MESSAGES} .msg-body").last).to_have_text("hi")
        await expect(alice.page.locator("#typing")).to_have_text("")
        # bob's own message reaches his page as the room's frame, which may follow alice's.
        for chat in (alice, bob):
            await expect(chat.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
                ["hello bob <script>window.pwned = 1</script>", "hi"])

        # Messages in a room bob is not looking at count as unread there until he opens it.
        await chat_server.say("alice", side, "one")
        await chat_server.say("alice", side, "two")
        side_button = bob.page.locator(f"#room-list button[data-room='{side}']")
        await expect(side_button.locator(".unread")).to_have_text("2 unread")
        await expect(bob.page).to_have_title("(2) chatserver")
        await bob.page.screenshot(path=artifacts / "two-users-chat-phone.png", full_page=True)
        await side_button.click()
        await expect(bob.page.locator("#room-title")).to_have_text(f"#{side}")
        await expect(bob.page.locator(f"{MESSAGES} .msg-body")).to_have_text(["one", "two"])
        await expect(side_button.locator(".unread")).to_have_count(0)
        await expect(bob.page).to_have_title("chatserver")
        await alice.page.screenshot(path=artifacts / "two-users-chat.png")

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


async def test_a_private_room_stays_private(browser: Any, chat_server: ChatServer) -> None:
    """A private room made in the UI shows nowhere for a non-member, not even when they ask
    for it by its address, and its messages never reach their page."""
    secret, hall = room_name("secret"), room_name("hall")
    await chat_server.create_room("carol", hall)
    alice = await open_chat(browser, chat_server, "alice")
    try:
        await alice.page.get_by_text("Create a room").click()
        await alice.page.get_by_label("Room name").fill(secret)
        await alice.page.get_by_label("Private (members only)").check()
        await alice.page.get_by_role("button", name="Create").click()
        await expect(alice.page.locator("#room-title")).to_have_text(f"#{secret}")
        await expect(alice.page.locator("#room-kind")).to_have_text("private")

        carol = await open_chat(browser, chat_server, "carol", room=hall)
        await carol.page.goto(f"/#{secret}")
        await expect(carol.page.locator("#conn-status")).to_have_attribute(
            "data-state", "connected")
        await expect(carol.page.locator("#notice")).to_have_text(
            "That room does not exist or is not visible to you.")
        await alice.send("the plan is in the attic")
        await expect(alice.page.locator(f"{MESSAGES} .msg-body").last).to_have_text(
            "the plan is in the attic")
        # A round trip of carol's own after alice's message: anything for her has arrived.
        await chat_server.say("carol", hall, "anyone here?")
        await expect(carol.page.locator(f"{MESSAGES} .msg-body").last).to_have_text(
            "anyone here?")
        page_text = await carol.page.locator("body").inner_text()
        assert secret not in page_text and "attic" not in page_text
        assert secret not in await carol.page.content()
        assert await carol.page.locator("#room-title").inner_text() != f"#{secret}"
        carol.check_no_errors()
        alice.check_no_errors()
        await carol.close()
    finally:
        await alice.close()
