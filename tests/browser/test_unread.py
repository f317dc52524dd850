"""The web UI's unread and mention counts come from the server's read positions: they survive
a reload, reading on one device clears the others, and @mentions are counted apart."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser.ui import MESSAGES, ChatServer, open_chat, room_name

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.asyncio(loop_scope="session")]


def room_button(chat: Any, room: str) -> Any:
    return chat.page.locator(f"#room-list button[data-room='{room}']")


async def server_counts(server: ChatServer, user: str, room: str) -> dict[str, Any]:
    rooms = (await server.call(user, "GET", "/api/rooms"))["rooms"]
    listing: dict[str, Any] = next(r for r in rooms if r["name"] == room)
    return listing


async def test_counts_kept_while_away_show_on_load_and_reading_stores_the_position(
        browser: Any, chat_server: ChatServer, artifacts: Path) -> None:
    """Messages posted while alice had no page open are unread when she comes back (the
    server counted them), @alice and @room count as mentions, her own messages never count,
    and opening the room reads it: the server's read position moves to its newest message,
    so a reload shows no badge."""
    home, busy = room_name("home"), room_name("busy")
    alice = await chat_server.new_user("alice")  # her title counts this test's rooms only
    await chat_server.create_room(alice, home)
    await chat_server.create_room(alice, busy, members=("bob",))
    await chat_server.say(alice, busy, "mine, never unread")
    await chat_server.say("bob", busy, "plain one")
    await chat_server.say("bob", busy, f"@{alice} a question for you")
    last = await chat_server.say("bob", busy, "@room deploy at five")

    page = await open_chat(browser, chat_server, alice, room=home)
    try:
        button = room_button(page, busy)
        await expect(button.locator(".unread")).to_have_text("3 unread")
        await expect(button.locator(".mention-count")).to_have_text("@2 mentions")
        await expect(page.page).to_have_title("(3) chatserver")
        await page.page.screenshot(path=artifacts / "unread-and-mentions.png")

        await button.click()
        await expect(page.page.locator(f"{MESSAGES} .msg-body")).to_have_count(4)
        await expect(button.locator(".unread")).to_have_count(0)
        await expect(button.locator(".mention-count")).to_have_count(0)
        await expect(page.page).to_have_title("chatserver")
        # The "New messages" line sits above the first of them, below her own.
        rows = page.page.locator("#message-list > li")
        await expect(rows.nth(1)).to_have_class("unread-divider")
        await expect(rows.nth(1)).to_have_text("New messages")
        await expect(rows.nth(2).locator(".msg-body")).to_have_text("plain one")
        # The message that mentions her by name is marked for her.
        await expect(page.page.locator(f"{MESSAGES}.mentions-me")).to_have_count(2)
        await expect(page.page.locator(f"{MESSAGES} .msg-body .mention").first).to_have_text(
            f"@{alice}")

        # The page told the server: the position is the room's newest message.
        for _ in range(100):
            counts = await server_counts(chat_server, alice, busy)
            if counts["read_seq"] == last["seq"]:
                break
            await asyncio.sleep(0.1)
        assert counts["read_seq"] == last["seq"], counts
        assert (counts["unread"], counts["mentions"]) == (0, 0)
        await page.page.goto(f"/#{home}")
        await page.page.reload()
        await expect(page.page.locator("#conn-status")).to_have_attribute(
            "data-state", "connected")
        await expect(room_button(page, busy)).to_be_visible()
        await expect(room_button(page, busy).locator(".unread")).to_have_count(0)
        page.check_no_errors()
    finally:
        await page.close()


async def test_reading_on_one_device_clears_the_badge_on_the_other(
        browser: Any, chat_server: ChatServer) -> None:
    """alice has the chat open on two devices; bob's messages (one mentioning her) count on
    both, live; when she reads the room on one, the other's badge goes too."""
    home, talk = room_name("home"), room_name("talk")
    alice = await chat_server.new_user("alice")
    await chat_server.create_room(alice, home)
    await chat_server.create_room(alice, talk, members=("bob",))
    laptop = await open_chat(browser, chat_server, alice, room=home)
    phone = await open_chat(browser, chat_server, alice, room=home)
    try:
        await chat_server.say("bob", talk, "are you there?")
        await chat_server.say("bob", talk, f"@{alice} ping")
        for device in (laptop, phone):
            await expect(room_button(device, talk).locator(".unread")).to_have_text("2 unread")
            await expect(room_button(device, talk).locator(".mention-count")).to_have_text(
                "@1 mention")

        await room_button(laptop, talk).click()
        await expect(laptop.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
            ["are you there?", f"@{alice} ping"])
        await expect(room_button(laptop, talk).locator(".unread")).to_have_count(0)
        # The phone hears of it from the server (a `read` frame), not from a reload.
        await expect(room_button(phone, talk).locator(".unread")).to_have_count(0)
        await expect(room_button(phone, talk).locator(".mention-count")).to_have_count(0)
        await expect(phone.page).to_have_title("chatserver")

        # A message in the room the laptop has open, at the bottom, is read there at once.
        await chat_server.say("bob", talk, "thanks")
        await expect(laptop.page.locator(f"{MESSAGES} .msg-body").last).to_have_text("thanks")
        await expect(room_button(phone, talk).locator(".unread")).to_have_count(0)
        await expect(room_button(laptop, talk).locator(".unread")).to_have_count(0)
        laptop.check_no_errors()
        phone.check_no_errors()
    finally:
        await laptop.close()
        await phone.close()


async def test_a_direct_message_appears_at_once_with_its_unread_count(
        browser: Any, chat_server: ChatServer) -> None:
    """bob opens a conversation with alice while her page is open: it shows in her list at
    once (the server's `room_added`, not the minute's re-read), and his first message there
    counts as unread."""
    home = room_name("home")
    alice = await chat_server.new_user("alice")
    await chat_server.create_room(alice, home)
    page = await open_chat(browser, chat_server, alice, room=home)
    try:
        direct = await chat_server.call("bob", "POST", "/api/direct", {"user": alice})
        button = room_button(page, direct["name"])
        await expect(button).to_have_text(re.compile(r"@bob"))
        await chat_server.say("bob", direct["name"], f"@{alice} got a minute?")
        await expect(button.locator(".unread")).to_have_text("1 unread")
        await expect(button.locator(".mention-count")).to_have_text("@1 mention")
        await expect(page.page).to_have_title("(1) chatserver")
        await button.click()
        await expect(page.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
            [f"@{alice} got a minute?"])
        await expect(button.locator(".unread")).to_have_count(0)
        page.check_no_errors()
    finally:
        await page.close()


async def test_a_long_unread_stretch_opens_at_the_line_and_is_read_at_the_bottom(
        browser: Any, chat_server: ChatServer) -> None:
    """More unread messages than fit: the room opens at the "New messages" line, stays
    unread while the reader is above the newest message, and is read once they scroll down."""
    home, busy = room_name("home"), room_name("long")
    alice = await chat_server.new_user("alice")
    await chat_server.create_room(alice, home)
    await chat_server.create_room(alice, busy, members=("bob",))
    await chat_server.say(alice, busy, "before I left")
    async with aiohttp.ClientSession() as session:
        bob = await chat_server.socket(session, "bob")
        try:
            acks = await bob.send_many(busy, [f"news {i}" for i in range(80)])
        finally:
            await bob.close()
    page = await open_chat(browser, chat_server, alice, room=home)
    try:
        button = room_button(page, busy)
        await expect(button.locator(".unread")).to_have_text("80 unread")
        await button.click()
        await expect(page.page.locator("#message-scroller")).to_have_attribute("aria-busy",
                                                                              "false")
        await expect(page.page.locator(".unread-divider")).to_be_in_viewport()
        await expect(page.page.locator(f"{MESSAGES}").last).not_to_be_in_viewport()
        await expect(button.locator(".unread")).to_have_text("80 unread")

        await page.page.locator("#message-scroller").evaluate(
            "(scroller) => { scroller.scrollTop = scroller.scrollHeight; }")
        await expect(button.locator(".unread")).to_have_count(0)
        for _ in range(100):
            counts = await server_counts(chat_server, alice, busy)
            if counts["read_seq"] == acks[-1]["seq"]:
                break
            await asyncio.sleep(0.1)
        assert counts["read_seq"] == acks[-1]["seq"], counts
        page.check_no_errors()
    finally:
        await page.close()
