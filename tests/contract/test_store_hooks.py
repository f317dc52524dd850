"""The Store contract for incoming webhooks: every backend in `conftest.BACKENDS` stores hooks
by their token's hash, finds only live ones, lists every one and revokes idempotently."""

from __future__ import annotations

import re

import pytest

from chatserver.errors import Conflict, NotFound
from chatserver.store.base import Store, User

from .test_store import TS, user


async def _bot(store: Store, name: str = "hook-general") -> User:
    return await user(store, name, is_bot=True)


async def test_created_hook_is_found_by_its_token_hash_with_room_and_bot(store: Store) -> None:
    """create_hook returns the hook with its room and bot, and hook_by_token finds the same."""
    admin = await user(store, "alice", is_admin=True)
    room = await store.create_room("general", "public", None)
    bot = await _bot(store)
    hook = await store.create_hook(room.id, bot.id, "hash-1", admin.id)
    assert (hook.room, hook.bot.name, hook.bot.is_bot, hook.created_by) == (
        room, "hook-general", True, admin.id)
    assert TS.match(hook.created_at) and hook.revoked_at is None and not hook.revoked
    assert await store.hook_by_token("hash-1") == hook
    assert await store.hook_by_token("hash-2") is None


async def test_revoked_hook_is_unknown_and_revoking_is_idempotent(store: Store) -> None:
    """After revoke_hook the token finds nothing; a second revoke keeps the first time."""
    room = await store.create_room("general", "private", None)
    hook = await store.create_hook(room.id, (await _bot(store)).id, "hash-1", None)
    revoked = await store.revoke_hook(hook.id)
    assert revoked.revoked and revoked.revoked_at is not None and TS.match(revoked.revoked_at)
    assert (revoked.id, revoked.room, revoked.bot, revoked.created_at) == (
        hook.id, hook.room, hook.bot, hook.created_at)
    assert await store.hook_by_token("hash-1") is None
    assert (await store.revoke_hook(hook.id)).revoked_at == revoked.revoked_at
    with pytest.raises(NotFound, match=re.escape(str(hook.id + 1000))):
        await store.revoke_hook(hook.id + 1000)


async def test_list_hooks_shows_every_hook_by_id_revoked_included(store: Store) -> None:
    """list_hooks returns live and revoked hooks in creation order, each with its own room."""
    general = await store.create_room("general", "public", None)
    ops = await store.create_room("ops", "public", None)
    bot = await _bot(store, "deploys")
    first = await store.create_hook(general.id, bot.id, "hash-1", None)
    second = await store.create_hook(ops.id, bot.id, "hash-2", None)
    await store.revoke_hook(first.id)
    listed = await store.list_hooks()
    assert [(h.id, h.room.name, h.bot.name, h.revoked) for h in listed] == [
        (first.id, "general", "deploys", True), (second.id, "ops", "deploys", False)]


async def test_hook_of_unknown_room_or_bot_is_not_found_and_duplicate_hash_conflicts(
        store: Store) -> None:
    """A hook needs an existing room and bot user (`NotFound`), and a token hash is unique
    (`Conflict`); neither failure leaves a hook behind."""
    room = await store.create_room("general", "public", None)
    bot = await _bot(store)
    await store.create_hook(room.id, bot.id, "hash-1", None)
    with pytest.raises(NotFound):
        await store.create_hook(room.id + 1000, bot.id, "hash-2", None)
    with pytest.raises(NotFound):
        await store.create_hook(room.id, bot.id + 1000, "hash-3", None)
    with pytest.raises(Conflict):
        await store.create_hook(room.id, bot.id, "hash-1", None)
    assert [h.bot.name for h in await store.list_hooks()] == ["hook-general"]
    assert await store.hook_by_token("hash-2") is None


async def test_hook_reflects_its_bot_being_disabled(store: Store) -> None:
    """hook_by_token reports the bot's current state, so a disabled bot can be refused."""
    room = await store.create_room("general", "public", None)
    await store.create_hook(room.id, (await _bot(store)).id, "hash-1", None)
    await store.set_disabled("hook-general", True)
    found = await store.hook_by_token("hash-1")
    assert found is not None and found.bot.disabled
