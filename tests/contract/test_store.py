"""The Store contract: what every backend guarantees (see `chatserver.store.base`).

Every test uses only the Store interface plus the `stats.transactions` counter, and runs
against every backend in `conftest.BACKENDS`. Backend-specific tests live beside it:
test_sqlite_store.py and test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable

import pytest

from chatserver.errors import Conflict, NotFound, StoreUnavailable
from chatserver.store.base import NewMessage, Room, Store, StoredMessage, User

ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")

StoreFactory = Callable[..., Store]  # conftest.make_store: unopened stores on shared storage


async def user(store: Store, name: str, **flags: bool) -> User:
    return await store.create_user(name, f"$argon2id$hash-of-{name}", **flags)


def new(room: Room, author: User, text: str, **extra: object) -> NewMessage:
    return NewMessage(
        room_id=room.id,
        room=room.name,
        user_id=author.id,
        user=author.name,
        text=text,
        html=f"<p>{text}</p>",
        **extra,  # type: ignore[arg-type]
    )


async def history(store: Store, room: Room) -> list[StoredMessage]:
    return await store.messages_after(room.id, 0, 10_000)


# -- migrations -------------------------------------------------------------------------------


async def test_migrate_applies_every_version_once_in_order(make_store: StoreFactory) -> None:
    """migrate() on fresh storage applies versions 1..N in order, and nothing the second time."""
    store = make_store()
    versions = await store.migrate()
    assert versions and versions == list(range(1, len(versions) + 1))
    assert await store.migrate() == []
    await store.open()
    assert await store.migrate() == []


async def test_open_applies_migrations_and_reopen_applies_none(make_store: StoreFactory) -> None:
    """open() migrates fresh storage, so the store works at once; reopening migrates nothing."""
    first = make_store()
    await first.open()
    await user(first, "alice")
    assert await first.migrate() == []
    await first.close()
    second = make_store()
    await second.open()
    assert await second.migrate() == []
    assert await second.get_user("alice") is not None


# -- users ------------------------------------------------------------------------------------


async def test_create_user_returns_the_user_with_its_flags(store: Store) -> None:
    """create_user returns the stored user, and get_user finds the same one by name."""
    alice = await user(store, "alice", is_admin=True)
    bot = await user(store, "helper", is_bot=True)
    assert (alice.name, alice.is_admin, alice.is_bot, alice.disabled) == (
        "alice",
        True,
        False,
        False,
    )
    assert (bot.is_admin, bot.is_bot) == (False, True)
    assert alice.id != bot.id
    assert await store.get_user("alice") == alice
    assert await store.get_user("nobody") is None
    assert await store.count_users() == 2


async def test_duplicate_user_name_is_a_conflict(store: Store) -> None:
    """A second user with a taken name raises Conflict and changes nothing."""
    await user(store, "alice")
    with pytest.raises(Conflict):
        await user(store, "alice")
    assert await store.count_users() == 1


async def test_password_hash_is_stored_and_replaced(store: Store) -> None:
    """get_password_hash returns the user with the hash last set; unknown names give None."""
    alice = await user(store, "alice")
    assert await store.get_password_hash("alice") == (alice, "$argon2id$hash-of-alice")
    await store.set_password_hash(alice.id, "$argon2id$new")
    assert await store.get_password_hash("alice") == (alice, "$argon2id$new")
    assert await store.get_password_hash("nobody") is None


async def test_set_password_hash_of_unknown_user_is_not_found(store: Store) -> None:
    """Setting the password of a user id that does not exist raises NotFound."""
    with pytest.raises(NotFound):
        await store.set_password_hash(999_999, "$argon2id$x")


async def test_set_disabled_toggles_and_unknown_user_is_not_found(store: Store) -> None:
    """set_disabled returns the updated user, get_user agrees, and an unknown name is NotFound."""
    await user(store, "alice")
    disabled = await store.set_disabled("alice", True)
    assert disabled.disabled and await store.get_user("alice") == disabled
    assert not (await store.set_disabled("alice", False)).disabled
    with pytest.raises(NotFound):
        await store.set_disabled("nobody", True)


# -- tokens -----------------------------------------------------------------------------------


async def test_token_lookup_returns_user_hash_and_kind(store: Store) -> None:
    """A stored token hash leads to its user and kind; an unknown hash to None."""
    alice = await user(store, "alice")
    await store.add_token(alice.id, "h-api", "api")
    await store.add_token(alice.id, "h-session", "session")
    info = await store.token_info("h-api")
    assert info is not None and (info.user, info.token_hash, info.kind) == (alice, "h-api", "api")
    session = await store.token_info("h-session")
    assert session is not None and session.kind == "session"
    assert await store.token_info("h-unknown") is None


async def test_revoked_token_is_unknown_and_revoking_is_idempotent(store: Store) -> None:
    """A revoked token looks up as None, revoking twice is fine, other tokens stay valid."""
    alice = await user(store, "alice")
    await store.add_token(alice.id, "h1", "session")
    await store.add_token(alice.id, "h2", "session")
    await store.revoke_token("h1")
    await store.revoke_token("h1")
    await store.revoke_token("never-existed")
    assert await store.token_info("h1") is None
    assert await store.token_info("h2") is not None


async def test_revoke_user_tokens_revokes_only_that_users_live_tokens(store: Store) -> None:
    """All of a user's live tokens, or only one kind; counted once; other users untouched."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    for owner, token_hash, kind in ((alice, "a-s1", "session"), (alice, "a-s2", "session"),
                                    (alice, "a-api", "api"), (bob, "b-s", "session")):
        await store.add_token(owner.id, token_hash, kind)  # type: ignore[arg-type]
    await store.revoke_token("a-s2")
    assert await store.revoke_user_tokens(alice.id, "session") == 1
    assert await store.token_info("a-s1") is None and await store.token_info("a-api")
    assert await store.revoke_user_tokens(alice.id) == 1
    assert await store.revoke_user_tokens(alice.id) == 0
    assert await store.token_info("a-api") is None
    assert await store.token_info("b-s") is not None
    assert await store.revoke_user_tokens(999_999) == 0


async def test_list_users_by_name_with_live_tokens_by_kind(store: Store) -> None:
    """Every user once, by name, flags as stored, revoked tokens not counted."""
    bot = await user(store, "zeta-bot", is_bot=True)
    alice = await user(store, "alice", is_admin=True)
    await user(store, "bob")
    await store.set_disabled("bob", True)
    for owner, token_hash, kind in ((alice, "a-s1", "session"), (alice, "a-s2", "session"),
                                    (alice, "a-api", "api"), (bot, "z-api", "api")):
        await store.add_token(owner.id, token_hash, kind)  # type: ignore[arg-type]
    await store.revoke_token("a-s2")
    listed = await store.list_users()
    assert [(u.user.name, u.user.is_admin, u.user.is_bot, u.user.disabled, u.sessions,
             u.api_tokens) for u in listed] == [
        ("alice", True, False, False, 1, 1), ("bob", False, False, True, 0, 0),
        ("zeta-bot", False, True, False, 0, 1)]
    assert listed[0].user == alice and all(u.created_at > 1_600_000_000_000 for u in listed)


async def test_token_of_disabled_user_reports_the_disabled_user(store: Store) -> None:
    """Disabling does not revoke: token_info returns the user marked disabled; auth refuses it."""
    alice = await user(store, "alice")
    await store.add_token(alice.id, "h", "api")
    await store.set_disabled("alice", True)
    info = await store.token_info("h")
    assert info is not None and info.user.disabled


async def test_duplicate_token_hash_conflicts_and_unknown_user_is_not_found(store: Store) -> None:
    """A token hash is stored once (Conflict again) and only for an existing user (NotFound)."""
    alice = await user(store, "alice")
    await store.add_token(alice.id, "h", "api")
    with pytest.raises(Conflict):
        await store.add_token(alice.id, "h", "api")
    with pytest.raises(NotFound):
        await store.add_token(999_999, "other", "api")


async def test_invalid_tokens_names_the_revoked_and_the_disabled(store: Store) -> None:
    """invalid_tokens leaves valid tokens out and names each other one: "revoked" for a
    revoked or unknown hash, "disabled" for a disabled user's (revoked or not); a hash asked
    twice is answered once; re-enabling the user makes its tokens valid again."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    for owner, token_hash in ((alice, "a-valid"), (alice, "a-revoked"), (bob, "b-api"),
                              (bob, "b-revoked")):
        await store.add_token(owner.id, token_hash, "api")
    await store.revoke_token("a-revoked")
    await store.revoke_token("b-revoked")
    await store.set_disabled("bob", True)
    asked = ["a-valid", "a-revoked", "b-api", "b-revoked", "unknown", "a-revoked", "a-valid"]
    assert await store.invalid_tokens(asked) == {
        "a-revoked": "revoked", "unknown": "revoked", "b-api": "disabled",
        "b-revoked": "disabled"}
    await store.set_disabled("bob", False)
    assert await store.invalid_tokens(["a-valid", "b-api", "b-revoked"]) == {
        "b-revoked": "revoked"}
    assert await store.invalid_tokens([]) == {}
    assert await store.invalid_tokens(("a-valid",)) == {}


async def test_invalid_tokens_answers_tens_of_thousands_in_one_call(store: Store) -> None:
    """An instance's every open token at once: 20,000 hashes, of which the valid ones are
    left out and the rest named, whatever their number."""
    alice = await user(store, "alice")
    valid = [f"{i:064x}" for i in range(3)]
    for token_hash in valid:
        await store.add_token(alice.id, token_hash, "session")
    unknown = [f"{i:064x}" for i in range(3, 20_000)]
    assert await store.invalid_tokens(valid + unknown) == dict.fromkeys(unknown, "revoked")


async def test_invalid_tokens_of_a_closed_store_is_unavailable(store: Store) -> None:
    """The sweep's read raises StoreUnavailable when the store cannot answer (the sweep
    logs it and retries at its next interval)."""
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.invalid_tokens(["h"])


# -- rooms ------------------------------------------------------------------------------------


async def test_create_room_of_each_kind_makes_the_creator_a_member(store: Store) -> None:
    """create_room stores name, kind and creator, and the creator is the first member."""
    alice = await user(store, "alice")
    for name, kind in [("general", "public"), ("secret", "private"), ("ops", "direct")]:
        room = await store.create_room(name, kind, alice.id)  # type: ignore[arg-type]
        assert (room.name, room.kind, room.created_by) == (name, kind, alice.id)
        assert room.private == (kind != "public")
        assert await store.get_room(name) == room
        assert await store.member_names(room.id) == ["alice"]
    assert await store.get_room("nowhere") is None


async def test_room_without_creator_has_no_members(store: Store) -> None:
    """A room created by the system (created_by None) starts empty."""
    room = await store.create_room("announcements", "public", None)
    assert room.created_by is None and await store.member_names(room.id) == []


async def test_room_of_unknown_creator_is_not_found_and_not_created(store: Store) -> None:
    """A failed create_room leaves nothing behind: the name stays free."""
    with pytest.raises(NotFound):
        await store.create_room("general", "public", 999_999)
    assert await store.get_room("general") is None
    assert (await store.create_room("general", "public", None)).name == "general"


async def test_duplicate_room_name_is_a_conflict(store: Store) -> None:
    """A second room with a taken name raises Conflict, whatever its kind."""
    await store.create_room("general", "public", None)
    with pytest.raises(Conflict):
        await store.create_room("general", "private", None)


async def test_membership_is_idempotent_and_listed_by_name(store: Store) -> None:
    """add_member twice adds once (True the first time only); member_names and rooms_of_user
    are sorted by name."""
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    zoo = await store.create_room("zoo", "private", carol.id)
    art = await store.create_room("art", "public", None)
    assert [await store.add_member(room.id, bob.id) for room in (zoo, art, zoo)] == [
        True, True, False]
    assert await store.add_member(zoo.id, alice.id) is True
    assert await store.add_member(zoo.id, carol.id) is False  # the creator is one already
    assert await store.member_names(zoo.id) == ["alice", "bob", "carol"]
    assert await store.rooms_of_user(bob.id) == ["art", "zoo"]
    assert await store.is_member(zoo.id, bob.id)
    assert not await store.is_member(art.id, alice.id)


async def test_add_member_of_unknown_room_or_user_is_not_found(store: Store) -> None:
    """Membership needs an existing room and user."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", None)
    with pytest.raises(NotFound):
        await store.add_member(999_999, alice.id)
    with pytest.raises(NotFound):
        await store.add_member(room.id, 999_999)


async def test_direct_room_is_one_private_room_per_pair(store: Store) -> None:
    """direct_room(a, b) == direct_room(b, a): kind direct, a valid name, exactly both members;
    only the first call says it created the room."""
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    room, created = await store.direct_room(alice, bob)
    assert room.kind == "direct" and room.private and ROOM_NAME.match(room.name)
    assert created is True
    assert await store.direct_room(bob, alice) == (room, False)
    assert await store.member_names(room.id) == ["alice", "bob"]
    other, created = await store.direct_room(alice, carol)
    assert other.id != room.id and other.name != room.name and created is True


async def test_direct_room_with_unknown_user_is_not_found_and_leaves_nothing(
    store: Store,
) -> None:
    """A direct room with a user that does not exist fails whole: no room, no membership."""
    alice = await user(store, "alice")
    ghost = User(id=999_999, name="ghost")
    with pytest.raises(NotFound):
        await store.direct_room(alice, ghost)
    assert await store.rooms_of_user(alice.id) == []
    assert await store.rooms_visible_to(alice.id) == []


async def test_direct_room_is_idempotent_under_concurrency(store: Store) -> None:
    """Twenty concurrent direct_room calls for one pair, in both orders, create one room, and
    exactly one of them says it created it."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    answers = await asyncio.gather(
        *(store.direct_room(*((alice, bob) if i % 2 else (bob, alice))) for i in range(20))
    )
    rooms = [room for room, _ in answers]
    assert len(set(rooms)) == 1
    assert sum(created for _, created in answers) == 1
    assert await store.member_names(rooms[0].id) == ["alice", "bob"]
    assert await store.rooms_of_user(alice.id) == [rooms[0].name]


async def test_rooms_visible_to_hides_private_rooms_of_others(store: Store) -> None:
    """A user sees every public room and their own private and direct rooms, by name."""
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    general = await store.create_room("general", "public", bob.id)
    await store.create_room("bobs-secret", "private", bob.id)
    mine = await store.create_room("alices-secret", "private", alice.id)
    dm, _ = await store.direct_room(alice, carol)
    await store.direct_room(bob, carol)
    await store.append_message(new(general, bob, "hello"))

    listing = await store.rooms_visible_to(alice.id)
    assert [item.room.name for item in listing] == sorted([general.name, mine.name, dm.name])
    by_name = {item.room.name: item for item in listing}
    assert by_name["general"].member is False and by_name["general"].last_seq == 1
    assert by_name["general"].members == ()
    assert by_name["alices-secret"].member is True and by_name["alices-secret"].last_seq == 0
    assert by_name[dm.name].members == ("alice", "carol") and by_name[dm.name].member


# -- messages ---------------------------------------------------------------------------------


async def test_appends_get_seq_one_to_n_and_round_trip(store: Store) -> None:
    """Sequential appends get seq 1..N, a URL-safe unique id and a UTC ms timestamp."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    stored = [await store.append_message(new(room, alice, f"m{i}")) for i in range(10)]
    assert [m.seq for m in stored] == list(range(1, 11))
    assert len({m.id for m in stored}) == 10 and all(URL_SAFE.match(m.id) for m in stored)
    assert all(TS.match(m.ts) for m in stored)
    assert [(m.room, m.user, m.text, m.html) for m in stored[:1]] == [
        ("general", "alice", "m0", "<p>m0</p>")
    ]
    assert await history(store, room) == stored
    assert await store.latest_seq(room.id) == 10


async def test_html_unicode_stream_and_aborted_round_trip(store: Store) -> None:
    """Text and html come back byte for byte, and stream/aborted as stored."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    text = "héllo 👋🏽 世界 שלום e\u0301 '\"; DROP TABLE messages; -- \\ \t\n<b>"
    html = '<p>héllo 👋🏽 <a href="https://example.org/?a=1&amp;b=2">x</a> &lt;b&gt;</p>'
    plain = NewMessage(room.id, room.name, alice.id, alice.name, text, html)
    streamed = NewMessage(
        room.id,
        room.name,
        alice.id,
        alice.name,
        "partial",
        "<p>partial</p>",
        stream="s-1",
        aborted=True,
    )
    first, second = await store.append_message(plain), await store.append_message(streamed)
    assert (first.text, first.html, first.stream, first.aborted) == (text, html, None, False)
    assert (second.stream, second.aborted) == ("s-1", True)
    assert await history(store, room) == [first, second]


async def test_append_is_visible_to_reads_once_acknowledged(store: Store) -> None:
    """Once append_message returns, history and latest_seq include the message."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    for i in range(20):
        stored = await store.append_message(new(room, alice, f"m{i}"))
        assert await store.latest_seq(room.id) == stored.seq
        assert (await store.messages_before(room.id, None, 1)) == [stored]


async def test_append_to_unknown_room_fails_alone_and_burns_no_seq(store: Store) -> None:
    """Failing appends batched with good ones raise NotFound and leave the room's seqs gap-free."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    ghost = Room(id=999_999, name="ghost", kind="public")
    results = await asyncio.gather(
        *(
            store.append_message(new(ghost if i % 3 == 0 else room, alice, f"m{i}"))
            for i in range(60)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, NotFound) for r in results[::3])
    good = [r for i, r in enumerate(results) if i % 3]
    assert all(isinstance(r, StoredMessage) for r in good)
    assert sorted(r.seq for r in good) == list(range(1, 41))  # type: ignore[union-attr]
    assert [m.seq for m in await history(store, room)] == list(range(1, 41))


async def test_concurrent_appends_are_gap_free_and_stored_once(store: Store) -> None:
    """500 concurrent appends to 5 rooms: each room gets seqs 1..100, each message stored once."""
    alice = await user(store, "alice")
    rooms = [await store.create_room(f"room-{i}", "public", alice.id) for i in range(5)]
    results = await asyncio.gather(
        *(store.append_message(new(rooms[i % 5], alice, f"m{i}")) for i in range(500))
    )
    assert len({m.id for m in results}) == 500
    for room in rooms:
        stored = await history(store, room)
        assert [m.seq for m in stored] == list(range(1, 101))
        assert sorted(m.text for m in stored) == sorted(
            f"m{i}" for i in range(500) if rooms[i % 5] is room
        )
        assert sorted(stored, key=lambda m: m.seq) == sorted(
            (m for m in results if m.room == room.name), key=lambda m: m.seq
        )


async def test_appends_of_one_room_complete_in_seq_order(store: Store) -> None:
    """Append futures resolve (and their callers resume) in seq order within each room."""
    alice = await user(store, "alice")
    rooms = [await store.create_room(f"room-{i}", "public", alice.id) for i in range(4)]
    completed: dict[str, list[int]] = collections.defaultdict(list)

    def record(task: asyncio.Task[StoredMessage]) -> None:
        completed[task.result().room].append(task.result().seq)

    tasks = []
    for i in range(400):
        task = asyncio.ensure_future(store.append_message(new(rooms[i % 4], alice, f"m{i}")))
        task.add_done_callback(record)
        tasks.append(task)
    await asyncio.gather(*tasks)  # gather's own callbacks run after `record` on each task
    assert {name: seqs for name, seqs in completed.items()} == {
        room.name: list(range(1, 101)) for room in rooms
    }


async def test_concurrent_appends_are_group_committed(store: Store) -> None:
    """500 concurrent appends take far fewer than 500 transactions."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    before = store.stats.transactions  # type: ignore[attr-defined]
    await asyncio.gather(*(store.append_message(new(room, alice, f"m{i}")) for i in range(500)))
    used = store.stats.transactions - before  # type: ignore[attr-defined]
    assert 1 <= used <= 100


async def test_two_stores_on_one_storage_interleave_gap_free(make_store: StoreFactory) -> None:
    """Two stores sharing storage (two instances, or server and admin CLI) never reuse a seq."""
    first, second = make_store(), make_store()
    await first.open()
    await second.open()
    alice = await user(first, "alice")
    room = await first.create_room("general", "public", alice.id)
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).append_message(new(room, alice, f"m{i}"))
            for i in range(200)
        )
    )
    assert sorted(m.seq for m in results) == list(range(1, 201))
    assert [m.seq for m in await history(second, room)] == list(range(1, 201))


# -- history ----------------------------------------------------------------------------------


async def test_history_pages_by_seq_in_ascending_order(store: Store) -> None:
    """messages_after/before return at most `limit` messages of one room, ascending by seq."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    other = await store.create_room("other", "public", alice.id)
    for i in range(10):
        await store.append_message(new(room, alice, f"m{i}"))
        await store.append_message(new(other, alice, f"o{i}"))

    def seqs(messages: list[StoredMessage]) -> list[int]:
        assert all(m.room == "general" for m in messages)
        return [m.seq for m in messages]

    assert seqs(await store.messages_after(room.id, 0, 3)) == [1, 2, 3]
    assert seqs(await store.messages_after(room.id, 7, 50)) == [8, 9, 10]
    assert seqs(await store.messages_after(room.id, 10, 50)) == []
    assert seqs(await store.messages_before(room.id, None, 3)) == [8, 9, 10]
    assert seqs(await store.messages_before(room.id, 5, 2)) == [3, 4]
    assert seqs(await store.messages_before(room.id, 3, 50)) == [1, 2]
    assert seqs(await store.messages_before(room.id, 1, 50)) == []
    assert seqs(await store.messages_after(room.id, 0, 0)) == []
    assert seqs(await store.messages_before(room.id, None, 0)) == []
    assert await store.latest_seq(room.id) == 10


async def test_empty_room_has_latest_seq_zero_and_no_history(store: Store) -> None:
    """A room without messages has latest_seq 0 and empty history both ways."""
    room = await store.create_room("quiet", "public", None)
    assert await store.latest_seq(room.id) == 0
    assert await store.messages_after(room.id, 0, 50) == []
    assert await store.messages_before(room.id, None, 50) == []


# -- durability, shutdown, back-pressure -------------------------------------------------------


async def test_reopened_store_has_everything_and_continues_seqs(make_store: StoreFactory) -> None:
    """Users, tokens, rooms, members and messages survive close and reopen; seqs continue."""
    first = make_store()
    await first.open()
    alice, bob = await user(first, "alice"), await user(first, "bob")
    await first.add_token(alice.id, "h", "api")
    room = await first.create_room("secret", "private", alice.id)
    await first.add_member(room.id, bob.id)
    dm, _ = await first.direct_room(alice, bob)
    stored = [await first.append_message(new(room, bob, f"m{i}")) for i in range(5)]
    await first.close()

    second = make_store()
    await second.open()
    assert await second.get_user("alice") == alice
    info = await second.token_info("h")
    assert info is not None and info.user == alice
    assert await second.get_room("secret") == room
    assert await second.member_names(room.id) == ["alice", "bob"]
    assert await second.direct_room(bob, alice) == (dm, False)
    assert await history(second, room) == stored
    assert (await second.append_message(new(room, alice, "again"))).seq == 6


async def test_close_flushes_every_submitted_append(make_store: StoreFactory) -> None:
    """Appends submitted (started, not awaited) before close() are all stored and acknowledged."""
    store = make_store()
    await store.open()
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    tasks = [
        asyncio.ensure_future(store.append_message(new(room, alice, f"m{i}"))) for i in range(200)
    ]
    await asyncio.sleep(0)  # every task runs to its first await: the append is submitted
    await store.close()
    results = await asyncio.gather(*tasks)
    assert sorted(m.seq for m in results) == list(range(1, 201))

    reopened = make_store()
    await reopened.open()
    assert [m.id for m in await history(reopened, room)] == [
        m.id for m in sorted(results, key=lambda m: m.seq)
    ]


async def test_closed_store_is_unavailable_and_close_is_idempotent(store: Store) -> None:
    """After close(), writes and reads raise StoreUnavailable; closing again is harmless."""
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.append_message(new(room, alice, "late"))
    with pytest.raises(StoreUnavailable):
        await store.get_user("alice")
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_full_write_queue_refuses_at_once(make_store: StoreFactory) -> None:
    """Past max_pending_writes, appends raise StoreUnavailable; accepted ones are all stored."""
    store = make_store(max_pending_writes=5)
    await store.open()
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", alice.id)
    results = await asyncio.gather(
        *(store.append_message(new(room, alice, f"m{i}")) for i in range(50)),
        return_exceptions=True,
    )
    accepted = [r for r in results if isinstance(r, StoredMessage)]
    refused = [r for r in results if not isinstance(r, StoredMessage)]
    assert refused and all(isinstance(r, StoreUnavailable) for r in refused)
    assert len(accepted) >= 5
    assert [m.id for m in await history(store, room)] == [
        m.id for m in sorted(accepted, key=lambda m: m.seq)
    ]
    assert (await store.append_message(new(room, alice, "after"))).seq == len(accepted) + 1


async def test_ping_answers_while_open(store: Store) -> None:
    """ping() returns quietly while the backend answers."""
    await store.ping()
