"""Incoming webhooks: `chatserver hook create ROOM` makes one, `POST /hooks/{token}` posts
through it.

A hook is bound to one room and posts as one bot user. The bot is made on first use (default
name `hook-<room>`) with a password hash that can never verify, so it cannot log in; it is
made a member of the room, which a private room needs for its messages to be readable as the
bot's. Whoever holds the URL may post, so the token is the credential: 256 random bits, kept
only as a SHA-256 like API tokens, shown once. Revoking the hook, or disabling its bot, stops
it on the next request.

Body parsing is pure (bytes in, text out) so it is checked without a server.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson

from chatserver import protocol
from chatserver.errors import BadRequest, Conflict, Forbidden, TooLarge
from chatserver.rooms import Rooms
from chatserver.store.base import Hook, Store, User
from chatserver.tokens import hash_token, new_token

# "!" is no argon2 encoding: verify_password answers False for it, whatever the password.
NO_PASSWORD = "!"
BOT_PREFIX = "hook-"
MAX_USER_NAME = 32  # protocol.USER_NAME
FORM = "application/x-www-form-urlencoded"


def default_bot_name(room: str) -> str:
    """`hook-<room>`, cut to the user-name length (room names are a subset of its alphabet)."""
    return (BOT_PREFIX + room)[:MAX_USER_NAME]


def body_limit(max_message_bytes: int, max_frame_bytes: int) -> int:
    """The most bytes a hook body may have: room for a text of `max_message_bytes` even when
    every character is escaped (JSON \\u escapes, then form encoding), and Slack's extra fields."""
    return max(max_frame_bytes, 8 * max_message_bytes)


async def bot_for(store: Store, name: str) -> User:
    """The bot user `name`, made if missing; a human or disabled account of that name is
    refused, so a hook can never post as a person."""
    if not protocol.USER_NAME.fullmatch(name):
        raise BadRequest(f"bot name {name!r} must match ^[a-z0-9][a-z0-9_.-]{{0,31}}$ "
                         "(lower case)")
    found = await store.get_user(name)
    if found is None:
        try:
            return await store.create_user(name, NO_PASSWORD, is_bot=True)
        except Conflict:  # another `hook create` made it a moment ago
            found = await store.get_user(name)
            if found is None:
                raise
    if not found.is_bot:
        raise Conflict(f"user {name!r} exists and is not a bot; choose another --name")
    if found.disabled:
        raise Conflict(f"bot user {name!r} is disabled; choose another --name")
    return found


async def create(store: Store, room_name: str, bot_name: str | None,
                 created_by: User | None) -> tuple[Hook, str]:
    """Make a hook posting to `room_name` as `bot_name` (default `hook-<room>`); the hook and
    its token, which exists nowhere else from now on."""
    rooms = Rooms(store)
    room = await rooms.get(room_name)
    if room.kind == "direct":
        raise Forbidden("a hook cannot post to a direct room (it has exactly two members)")
    bot = await bot_for(store, bot_name or default_bot_name(room.name))
    await store.add_member(room.id, bot.id)
    token = new_token()
    hook = await store.create_hook(room.id, bot.id, hash_token(token),
                                   created_by.id if created_by else None)
    return hook, token


def hook_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/hooks/{token}"


def parse_body(body: bytes, content_type: str, max_message_bytes: int) -> str:
    """The text to post from a Slack-style body: JSON `{"text": "..."}`, or a form whose
    `payload` field holds that JSON. Anything else is `BadRequest` saying what is wrong."""
    if content_type == FORM:
        payload = _form_payload(body)
    else:
        payload = _json(body, "request body")
    if not isinstance(payload, dict):
        raise BadRequest("the message must be a JSON object like {\"text\": \"...\"}")
    if "text" not in payload:
        raise BadRequest("the message has no 'text' field")
    text = payload["text"]
    if not isinstance(text, str):
        raise BadRequest(f"'text' must be a string, not {_json_type(text)}")
    try:
        return protocol.check_text(text, max_message_bytes)
    except TooLarge as error:
        # A hook has one answer for a message it will not post: 400 with the reason (Slack's
        # senders treat 413 as a transport problem).
        raise BadRequest(error.message) from None


def _form_payload(body: bytes) -> Any:
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                       strict_parsing=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form body is not valid UTF-8 form encoding") from None
    payload = fields.get("payload")
    if payload is None:
        raise BadRequest("the form body needs a 'payload' field holding the JSON message")
    if len(payload) != 1:
        raise BadRequest("the form body has more than one 'payload' field")
    return _json(payload[0].encode("utf-8"), "'payload'")


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"{what} is not valid JSON (UTF-8)") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"
