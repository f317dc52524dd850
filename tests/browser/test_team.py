"""The web UI in Debian's headless chromium against the real daemon: the team features of
docs/protocol.md §10 — threads, edits, deletions, reactions and files — driven as a user
does (hover, click, type), checked on the other user's page as they arrive live, after a
reload, and after a resume that missed them."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from typing import Any

import aiohttp
import pytest
from PIL import Image
from playwright.async_api import expect

from tests.browser.ui import MESSAGES, ChatPage, ChatServer, open_chat, room_name

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.asyncio(loop_scope="session")]

DELETED = "This message was deleted."
# The UI's liveness check (connection.js): a ping every 25 s, abandoned without a pong in 10 s.
PING_INTERVAL = "00:26"
PONG_TIMEOUT = "00:11"


def message(chat: ChatPage, seq: int) -> Any:
    """The timeline's item for the message `seq` (top-level messages only)."""
    return chat.page.locator(f"{MESSAGES}[data-seq='{seq}']")


async def send(chat: ChatPage, text: str) -> int:
    """Send through the composer; the seq of the message once it shows in the timeline."""
    await chat.send(text)
    item = chat.page.locator(MESSAGES).filter(
        has=chat.page.locator(".msg-body", has_text=text))
    await expect(item).to_have_count(1)
    return int(await item.get_attribute("data-seq") or "0")


async def act(item: Any, action: str) -> None:
    """Click one of a message's actions, which show on hover as for a mouse user."""
    await item.hover()
    button = item.locator(f".msg-actions button[data-action='{action}']")
    await expect(button).to_be_visible()
    await button.click()


async def react(item: Any, emoji: str) -> None:
    """Open the reaction picker under a message and pick `emoji`."""
    await act(item, "react")
    await item.locator(".reaction-picker").get_by_role(
        "button", name=f"React with {emoji}", exact=True).click()


async def delete(chat: ChatPage, item: Any) -> None:
    """Delete a message, confirming the browser's dialog."""
    chat.page.once("dialog", lambda dialog: dialog.accept())
    await act(item, "delete")


async def edit(item: Any, text: str) -> None:
    """Edit a message in place: the body becomes a text box; Enter saves."""
    await act(item, "edit")
    box = item.get_by_role("textbox", name="Edit message")
    await expect(box).to_be_focused()
    await box.fill(text)
    await box.press("Enter")
    await expect(item.locator("form.msg-editor")).to_have_count(0)


async def reopened(chat: ChatPage, room: str) -> None:
    """Wait for a reloaded page to be connected with `room`'s history in."""
    await expect(chat.page.locator("#conn-status")).to_have_attribute("data-state", "connected")
    await expect(chat.page.locator("#room-title")).to_have_text(f"#{room}")
    await expect(chat.page.locator("#message-scroller")).to_have_attribute("aria-busy", "false")


async def test_a_thread_is_answered_beside_the_room(browser: Any,
                                                    chat_server: ChatServer) -> None:
    """alice answers bob's message in a thread: bob's root shows "1 reply" live while the reply
    stays out of his timeline; the panel shows root and replies, and a reply in it reaches
    alice's open panel live (without closing the edit she has open there); a reload counts
    the replies from history."""
    room = room_name("thread")
    await chat_server.create_room("alice", room, members=("bob",))
    root = (await chat_server.say("bob", room, "who can review the deploy?"))["seq"]
    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room)
    try:
        panel = alice.page.locator("#thread-panel")
        await expect(panel).to_be_hidden()
        await act(message(alice, root), "reply")
        await expect(panel).to_be_visible()
        await expect(alice.page.locator("#thread-title")).to_have_text(f"Thread in #{room}")
        await expect(alice.page.locator("#thread-root li.msg .msg-body")).to_have_text(
            "who can review the deploy?")
        await expect(alice.page.locator("#thread-scroller")).to_have_attribute(
            "aria-busy", "false")
        await expect(alice.page.locator("#thread-list li.msg")).to_have_count(0)
        thread_input = alice.page.locator("#thread-input")
        await expect(thread_input).to_be_focused()
        await thread_input.fill("I can, after lunch")
        await thread_input.press("Enter")
        await expect(thread_input).to_have_value("")
        await expect(alice.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["I can, after lunch"])

        # bob, on the room all along: the root counts the reply; his timeline does not show it.
        bob_root = message(bob, root)
        await expect(bob_root.locator(".thread-summary")).to_have_text("1 reply")
        assert await bob.texts() == ["who can review the deploy?"]
        assert await alice.texts() == ["who can review the deploy?"]
        await expect(message(alice, root).locator(".thread-summary")).to_have_text("1 reply")

        await bob_root.locator(".thread-summary").click()
        await expect(bob.page.locator("#thread-panel")).to_be_visible()
        await expect(bob.page.locator("#thread-scroller")).to_have_attribute("aria-busy", "false")
        await expect(bob.page.locator("#thread-root li.msg .msg-body")).to_have_text(
            "who can review the deploy?")
        await expect(bob.page.locator("#thread-list li.msg .msg-user")).to_have_text(["alice"])
        await expect(bob.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["I can, after lunch"])

        # alice starts correcting her reply in the panel while bob answers: his reply shows
        # up live in her open panel, and her edit in progress stays open, focused, as typed.
        alice_reply = alice.page.locator("#thread-list li.msg").first
        await act(alice_reply, "edit")
        editing = alice_reply.get_by_role("textbox", name="Edit message")
        await editing.fill("I can, after 2pm")
        await bob.page.locator("#thread-input").fill("thanks!")
        await bob.page.locator("#thread-input").press("Enter")
        await expect(bob.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["I can, after lunch", "thanks!"])
        await expect(alice.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["thanks!"])  # her own reply's body is the editor for now
        await expect(alice.page.locator("#thread-list li.msg")).to_have_count(2)
        await expect(editing).to_have_value("I can, after 2pm")
        await expect(editing).to_be_focused()
        await editing.press("Enter")
        await expect(alice.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["I can, after 2pm", "thanks!"])
        await expect(bob.page.locator("#thread-list li.msg .msg-body")).to_have_text(
            ["I can, after 2pm", "thanks!"])
        await expect(bob.page.locator("#thread-list li.msg").first.locator(".msg-edited")
                     ).to_have_text(" (edited)")

        # Reactions in the panels: each change to the same reply shows on both pages.
        await react(bob.page.locator("#thread-list li.msg").first, "👍")
        alice_chip = alice.page.locator("#thread-list li.msg").first.locator("button.reaction")
        bob_chip = bob.page.locator("#thread-list li.msg").first.locator("button.reaction")
        await expect(alice_chip).to_have_text("👍 1")
        await alice_chip.click()
        for chip in (alice_chip, bob_chip):
            await expect(chip).to_have_text("👍 2")
            await expect(chip).to_have_attribute("aria-pressed", "true")

        # Both roots count two replies, live.
        await expect(message(alice, root).locator(".thread-summary")).to_have_text("2 replies")
        await expect(bob_root.locator(".thread-summary")).to_have_text("2 replies")
        assert await bob.texts() == ["who can review the deploy?"]

        await alice.page.reload()
        await reopened(alice, room)
        await expect(message(alice, root).locator(".thread-summary")).to_have_text("2 replies")
        assert await alice.texts() == ["who can review the deploy?"]
        await expect(alice.page.locator("#thread-panel")).to_be_hidden()

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


async def test_a_streamed_thread_reply_settles_in_its_thread(
        browser: Any, chat_server: ChatServer) -> None:
    """A bot streams a reply into a thread: it grows in the open thread panel (never in the
    timeline), and once the stream ends the reply is there, counted on its root."""
    room = room_name("thread-stream")
    await chat_server.create_room("bob", room, members=("alice",))
    root = (await chat_server.say("bob", room, "summarise the incident"))["seq"]
    alice = await open_chat(browser, chat_server, "alice", room=room)
    async with aiohttp.ClientSession() as session:
        bot = await chat_server.socket(session, "bob")
        try:
            await act(message(alice, root), "reply")
            await expect(alice.page.locator("#thread-scroller")).to_have_attribute(
                "aria-busy", "false")
            await bot.request({"op": "join", "room": room})
            stream = (await bot.request({"op": "stream_start", "room": room,
                                         "thread": root}))["stream"]
            await bot.delta(stream, "The **database** ")
            await bot.delta(stream, "ran out of disk.")
            # It grows in the open thread, not in the timeline.
            placeholder = alice.page.locator(f"#thread-streams li[data-stream='{stream}']")
            await expect(placeholder).to_contain_text("bob is writing…")
            await expect(placeholder.locator(".stream-text")).to_have_text(
                "The **database** ran out of disk.")
            await expect(alice.page.locator("#stream-list li")).to_have_count(0)
            await bot.request({"op": "stream_end", "stream": stream})

            await expect(alice.page.locator("#thread-list li.msg .msg-body")).to_have_text(
                ["The database ran out of disk."])
            await expect(message(alice, root).locator(".thread-summary")).to_have_text(
                "1 reply")
            await expect(alice.page.locator("#stream-list li")).to_have_count(0)
            assert await alice.texts() == ["summarise the incident"]
            alice.check_no_errors()
        finally:
            await bot.close()
            await alice.close()


async def test_edits_and_deletions_show_live(browser: Any, chat_server: ChatServer) -> None:
    """alice edits one of her messages in place (Escape cancels, Enter saves) and deletes
    another; bob sees the new text marked "(edited)" and the deletion live, and has no way to
    change alice's messages."""
    room = room_name("edits")
    await chat_server.create_room("alice", room, members=("bob",))
    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room)
    try:
        typo = await send(alice, "the relase is on friday")
        gone = await send(alice, "wrong room, sorry")
        await expect(bob.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
            ["the relase is on friday", "wrong room, sorry"])

        # Escape leaves the message as it was.
        mine = message(alice, typo)
        await act(mine, "edit")
        box = mine.get_by_role("textbox", name="Edit message")
        await expect(box).to_have_value("the relase is on friday")
        await box.fill("never mind")
        await box.press("Escape")
        await expect(mine.locator("form.msg-editor")).to_have_count(0)
        await expect(mine.locator(".msg-body")).to_have_text("the relase is on friday")
        await expect(mine.locator(".msg-edited")).to_have_count(0)

        await edit(mine, "the **release** is on friday")
        await expect(mine.locator(".msg-body")).to_have_text("the release is on friday")
        await expect(mine.locator(".msg-edited")).to_have_text(" (edited)")
        theirs = message(bob, typo)
        await expect(theirs.locator(".msg-body")).to_have_text("the release is on friday")
        await expect(theirs.locator(".msg-body strong")).to_have_text("release")
        await expect(theirs.locator(".msg-edited")).to_have_text(" (edited)")

        await delete(alice, message(alice, gone))
        for chat in (alice, bob):
            await expect(message(chat, gone).locator(".msg-body")).to_have_text(DELETED)
            await expect(message(chat, gone)).to_have_class("msg deleted")
            await expect(message(chat, gone).locator(".msg-actions")).to_have_count(0)

        # bob may reply to and react to alice's message, not edit or delete it.
        await message(bob, typo).hover()
        actions = message(bob, typo).locator(".msg-actions")
        await expect(actions.get_by_role("button", name="Reply in thread")).to_be_visible()
        await expect(actions.get_by_role("button", name="Add a reaction")).to_be_visible()
        await expect(bob.page.locator(f"{MESSAGES} [data-action='edit']")).to_have_count(0)
        await expect(bob.page.locator(f"{MESSAGES} [data-action='delete']")).to_have_count(0)
        await expect(mine.get_by_role("button", name="Edit message")).to_have_count(1)
        assert await bob.texts() == await alice.texts() == ["the release is on friday", DELETED]

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


async def test_reactions_count_live_and_toggle(browser: Any, chat_server: ChatServer) -> None:
    """bob reacts through the picker; alice sees the count live and adds hers by clicking the
    chip (pressed for her), then takes it back; her open picker survives bob's reaction."""
    room = room_name("reactions")
    await chat_server.create_room("alice", room, members=("bob",))
    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room)
    try:
        seq = await send(alice, "lunch at noon?")
        await expect(message(bob, seq).locator(".msg-body")).to_have_text("lunch at noon?")

        await react(message(bob, seq), "👍")
        await expect(bob.page.locator(".reaction-picker")).to_have_count(0)
        bob_chip = message(bob, seq).locator(".reactions button.reaction[data-emoji='👍']")
        alice_chip = message(alice, seq).locator(".reactions button.reaction[data-emoji='👍']")
        await expect(bob_chip).to_have_text("👍 1")
        await expect(bob_chip).to_have_attribute("aria-pressed", "true")
        await expect(alice_chip).to_have_text("👍 1")
        await expect(alice_chip).to_have_attribute("aria-pressed", "false")

        await alice_chip.click()
        for chip in (alice_chip, bob_chip):
            await expect(chip).to_have_text("👍 2")
            await expect(chip).to_have_attribute("aria-pressed", "true")

        await alice_chip.click()
        for chip in (alice_chip, bob_chip):
            await expect(chip).to_have_text("👍 1")
        await expect(alice_chip).to_have_attribute("aria-pressed", "false")
        await expect(bob_chip).to_have_attribute("aria-pressed", "true")
        await expect(message(alice, seq).locator(".reactions button.reaction")).to_have_count(1)

        # alice's picker stays open while bob's reaction to the same message redraws it.
        await act(message(alice, seq), "react")
        picker = message(alice, seq).locator(".reaction-picker")
        await expect(picker).to_have_count(1)
        await bob_chip.click()
        await expect(message(alice, seq).locator(".reactions button.reaction")).to_have_count(0)
        await expect(picker).to_have_count(1)
        await picker.get_by_role("button", name="React with 🎉", exact=True).click()
        await expect(picker).to_have_count(0)
        party = ".reactions button.reaction[data-emoji='🎉']"
        for chat in (alice, bob):
            await expect(message(chat, seq).locator(party)).to_have_text("🎉 1")

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


async def test_your_reaction_past_the_listed_users_shows_as_yours_after_a_click(
        browser: Any, chat_server: ChatServer) -> None:
    """History lists a reaction's first 20 users. alice reacted 21st: on her page the chip
    first shows as not hers; a click (an add the server answers `changed: false`) shows it
    as hers with the count unchanged, and the next click takes it back."""
    room = room_name("crowd")
    await chat_server.create_room("alice", room)
    crowd = [f"crowd{uuid.uuid4().hex[:6]}{i}" for i in range(20)]
    chat_server.tokens.update(await asyncio.to_thread(chat_server.daemon.add_users, *crowd))
    seq = (await chat_server.say("alice", room, "pizza on friday?"))["seq"]
    async with aiohttp.ClientSession() as session:
        for user in [*crowd, "alice"]:  # alice last: not among the 20 listed
            sock = await chat_server.socket(session, user)
            await sock.request({"op": "react", "room": room, "seq": seq, "emoji": "🍕"})
            await sock.close()
    alice = await open_chat(browser, chat_server, "alice", room=room)
    try:
        chip = message(alice, seq).locator(".reactions button.reaction[data-emoji='🍕']")
        await expect(chip).to_have_text("🍕 21")
        await expect(chip).to_have_attribute("aria-pressed", "false")
        await chip.click()
        await expect(chip).to_have_attribute("aria-pressed", "true")
        await expect(chip).to_have_text("🍕 21")
        await chip.click()
        await expect(chip).to_have_text("🍕 20")
        await expect(chip).to_have_attribute("aria-pressed", "false")
        alice.check_no_errors()
    finally:
        await alice.close()


async def test_a_resume_applies_what_happened_while_offline(browser: Any,
                                                            chat_server: ChatServer) -> None:
    """bob's network dies; his page notices when its ping goes unanswered. Meanwhile alice
    edits, reacts and deletes; when the network is back bob's page resumes and shows all three
    changes, without a reload."""
    room = room_name("resume")
    await chat_server.create_room("alice", room, members=("bob",))
    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room)
    try:
        # A controllable clock from the page's start (time still flows), so the wait for its
        # ping timeout can be skipped.
        await bob.page.clock.install()
        await bob.page.reload()
        await reopened(bob, room)
        await bob.page.evaluate("window.sameDocument = true")

        edited = await send(alice, "standup at 9:30")
        liked = await send(alice, "new build is green")
        deleted = await send(alice, "the password is hunter2")
        await expect(bob.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
            ["standup at 9:30", "new build is green", "the password is hunter2"])

        # A dead network closes nothing: the page finds out when its ping goes unanswered.
        await bob.context.set_offline(True)
        await bob.page.clock.fast_forward(PING_INTERVAL)
        await bob.page.clock.fast_forward(PONG_TIMEOUT)
        status = bob.page.locator("#conn-status")
        await expect(status).to_have_attribute("data-state", "reconnecting")

        await edit(message(alice, edited), "standup at 10:00")
        await react(message(alice, liked), "🎉")
        await delete(alice, message(alice, deleted))
        await expect(message(alice, deleted).locator(".msg-body")).to_have_text(DELETED)
        await expect(message(alice, liked).locator(".reaction")).to_have_text("🎉 1")
        # Nothing reached bob while he was away.
        assert await bob.texts() == [
            "standup at 9:30", "new build is green", "the password is hunter2"]

        await bob.context.set_offline(False)
        await expect(status).to_have_attribute("data-state", "connected")
        await expect(message(bob, edited).locator(".msg-body")).to_have_text("standup at 10:00")
        await expect(message(bob, edited).locator(".msg-edited")).to_have_text(" (edited)")
        chip = message(bob, liked).locator(".reactions button.reaction")
        await expect(chip).to_have_text("🎉 1")
        await expect(chip).to_have_attribute("aria-pressed", "false")
        await expect(message(bob, deleted).locator(".msg-body")).to_have_text(DELETED)
        await expect(message(bob, deleted)).to_have_class("msg deleted")
        assert await bob.page.evaluate("window.sameDocument") is True

        # Live again: a new message arrives after the ones it missed.
        await send(alice, "back?")
        await expect(bob.page.locator(f"{MESSAGES} .msg-body")).to_have_text(
            ["standup at 10:00", "new build is green", DELETED, "back?"])

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


def png(width: int = 64, height: int = 48) -> bytes:
    image = Image.new("RGB", (width, height), (36, 87, 197))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_an_uploaded_image_shows_for_everyone(browser: Any,
                                                    chat_server: ChatServer) -> None:
    """alice attaches a PNG through the composer; both pages show it as a message with a
    thumbnail (served by the server, and loaded) and a link with the file's name. bob attaches
    a file in a thread: it is a reply there, not in the timeline."""
    room = room_name("files")
    await chat_server.create_room("alice", room, members=("bob",))
    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room)
    try:
        await alice.page.locator("#composer-file").set_input_files(
            {"name": "chart.png", "mimeType": "image/png", "buffer": png()})
        for chat in (alice, bob):
            file = chat.page.locator(f"{MESSAGES} .msg-file")
            await expect(file).to_have_count(1)
            link = file.get_by_role("link", name="📎 chart.png")
            await expect(link).to_have_attribute("href", _starts_with("/api/files/"))
            thumbnail = file.locator("img.msg-thumbnail")
            await expect(thumbnail).to_have_attribute("src", _starts_with("/api/files/"))
            await expect(thumbnail).to_have_attribute("alt", "chart.png")
            # The thumbnail really loads (same origin, allowed by the page's CSP).
            await expect(thumbnail).to_have_js_property("complete", True)
            assert await thumbnail.evaluate("(img) => img.naturalWidth") > 0
            await expect(chat.page.locator(f"{MESSAGES} .msg-user")).to_have_text(["alice"])
        await expect(alice.page.locator("#notice")).to_have_text("Uploaded chart.png.")

        # A file attached in a thread is a reply: in the panel, counted on the root.
        await bob.send("the numbers?")
        question = bob.page.locator(MESSAGES, has_text="the numbers?")
        await question.hover()
        await question.get_by_role("button", name="Reply in thread").click()
        await expect(bob.page.locator("#thread-scroller")).to_have_attribute("aria-busy",
                                                                             "false")
        await bob.page.locator("#thread-file").set_input_files(
            {"name": "numbers.bin", "mimeType": "application/octet-stream",
             "buffer": b"\x00\x01 not an image"})
        reply_file = bob.page.locator("#thread-list li.msg .msg-file")
        await expect(reply_file.get_by_role("link", name="📎 numbers.bin")).to_be_visible()
        await expect(reply_file.locator("img")).to_have_count(0)
        await expect(alice.page.locator(MESSAGES, has_text="the numbers?").locator(
            ".thread-summary")).to_have_text("1 reply")
        await expect(alice.page.locator(f"{MESSAGES} .msg-file")).to_have_count(1)

        alice.check_no_errors()
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()


def _starts_with(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix))


async def test_a_late_thumbnail_shows_when_file_updated_arrives(browser: Any,
                                                                chat_server: ChatServer) -> None:
    """A thumbnail made after its message was posted (over 2 s) reaches the page as
    `file_updated`: the download link becomes the image. The server's timing cannot be
    forced from here, so bob's socket holds the thumbnail back: the message frame arrives as
    a slow job's would (a download, no thumbnail), then the page gets the `file_updated` the
    server would send."""
    room = room_name("late")
    await chat_server.create_room("alice", room, members=("bob",))
    held: list[dict[str, Any]] = []
    routes: list[Any] = []

    def route(page_socket: Any) -> None:
        server = page_socket.connect_to_server()
        routes.append(page_socket)

        def from_server(text: str | bytes) -> None:
            frame = json.loads(text)
            file = frame.get("file") if frame.get("op") == "message" else None
            if file and "thumbnail_url" in file:
                held.append({"target": frame["seq"], "file": file})
                frame["file"] = {key: value for key, value in file.items()
                                 if key != "thumbnail_url"}
                frame["file"]["content_type"] = "application/octet-stream"
                text = json.dumps(frame)
            page_socket.send(text)

        server.on_message(from_server)

    alice = await open_chat(browser, chat_server, "alice", room=room)
    bob = await open_chat(browser, chat_server, "bob", room=room, socket_route=route)
    try:
        await alice.page.locator("#composer-file").set_input_files(
            {"name": "slow.png", "mimeType": "image/png", "buffer": png()})
        file = bob.page.locator(f"{MESSAGES} .msg-file")
        await expect(file.get_by_role("link", name="📎 slow.png")).to_be_visible()
        await expect(file.locator("img")).to_have_count(0)
        assert len(held) == 1
        routes[-1].send(json.dumps({"op": "file_updated", "room": room, **held[0]}))
        thumbnail = file.locator("img.msg-thumbnail")
        await expect(thumbnail).to_have_attribute("src", held[0]["file"]["thumbnail_url"])
        await expect(thumbnail).to_have_js_property("complete", True)
        assert await thumbnail.evaluate("(img) => img.naturalWidth") > 0
        bob.check_no_errors()
    finally:
        await alice.close()
        await bob.close()
