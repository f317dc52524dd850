"""The Store seam: everything chatserver keeps, behind one interface.

Guarantees every backend gives (the contract suite in tests/contract/test_store.py holds each
backend to them):

- `append_message` returns only once the message is durable (committed and synced as the
  backend's durability setting promises). Its `seq` is the room's previous seq + 1: strictly
  increasing and gap-free per room, assigned at commit time.
- Appends are group-committed: many concurrent `append_message` calls become few transactions.
  The event loop never blocks on a write; callers await a future.
- For appends whose futures complete in the same batch, futures are resolved in seq order, in one
  loop callback, so callers resumed in that order publish in seq order.
- Reads never see a message before its append's transaction committed.
- Tokens are stored only as hashes; the store never sees a clear-text token or password. That
  holds for incoming-webhook tokens too, which live in their own table: a hook's token is not an
  API token and an API token is not a hook's.
- Writes that would exceed the store's bounded write queue raise `StoreUnavailable` at once
  rather than queueing without bound; an unreachable backend raises `StoreUnavailable` too.
"""

from __future__ import annotations

import abc
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from chatserver.errors import StoreUnavailable
from chatserver.histogram import BATCH_SIZE_BUCKETS, COMMIT_BUCKETS, Buckets

if TYPE_CHECKING:  # search types, for the search_messages signature only
    from chatserver.search import Cursor, SearchPage, SearchQuery

RoomKind = Literal["public", "private", "direct"]
MAX_RETENTION_DAYS = 36500  # a hundred years: anything longer is a typo, not a policy
TokenKind = Literal["api", "session"]
# Why a token no longer authenticates (`Store.invalid_tokens`): "revoked" (revoked, or not
# known at all) or "disabled" (its user is disabled; said even when the token is revoked too).
TokenInvalid = Literal["revoked", "disabled"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    is_admin: bool = False
    disabled: bool = False
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Who a token authenticates, and which token (by hash) it was."""

    user: User
    token_hash: str
    kind: TokenKind


@dataclass(frozen=True, slots=True)
class UserListing:
    """A user as `chatserver user list` shows it: when it was made and its live tokens."""

    user: User
    created_at: int  # ms since the epoch
    sessions: int  # live session tokens: browser logins
    api_tokens: int  # live API tokens: bots and scripts


# Both backends: every user by name, with its live tokens counted by kind.
LIST_USERS_SQL = """
SELECT u.id, u.name, u.is_admin, u.disabled, u.is_bot, u.created_at,
       count(t.hash) FILTER (WHERE t.kind = 'session'),
       count(t.hash) FILTER (WHERE t.kind = 'api')
FROM users u LEFT JOIN tokens t ON t.user_id = u.id AND t.revoked_at IS NULL
GROUP BY u.id, u.name, u.is_admin, u.disabled, u.is_bot, u.created_at
ORDER BY u.name
"""


@dataclass(frozen=True, slots=True)
class Room:
    id: int
    name: str
    kind: RoomKind
    created_by: int | None = None

    @property
    def private(self) -> bool:
        return self.kind != "public"


@dataclass(frozen=True, slots=True)
class RoomListing:
    """A room as `/api/rooms` shows it to one user."""

    room: Room
    member: bool
    last_seq: int
    members: tuple[str, ...] = ()  # filled only for direct rooms
    retention_days: int = 0  # messages older than this many days are removed; 0: kept forever


@dataclass(frozen=True, slots=True)
class Hook:
    """An incoming webhook: whoever holds its token posts to `room` as the bot user `bot`."""

    id: int
    room: Room
    bot: User
    created_by: int | None  # the user who made it; None for the admin CLI
    created_at: str  # ISO 8601 UTC like StoredMessage.ts
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


ThumbnailState = Literal["none", "pending", "ready", "failed"]


@dataclass(frozen=True, slots=True)
class NewFile:
    """An upload already on disk, to record: `id` is random and names it on disk; `name` is
    the sanitised client file name, metadata only."""

    id: str
    room_id: int
    uploader_id: int
    uploader: str
    name: str
    size: int
    content_type: str  # from the bytes, never the client's claim
    sha256: str  # hex
    thumbnail: ThumbnailState = "none"  # "pending" for images, until their job has run


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A recorded upload. `seq` is the message that posted it, once that message is stored
    (the link is written in the message's own transaction); None before."""

    id: str
    room_id: int
    room: str
    uploader: str
    name: str
    size: int
    content_type: str
    sha256: str
    created_at: str  # ISO 8601 UTC like StoredMessage.ts
    thumbnail: ThumbnailState = "none"
    thumbnail_type: str | None = None  # "image/png" or "image/jpeg" once ready
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Mention:
    """A user a message mentions (`@name`), looked up before the append."""

    user_id: int
    name: str


@dataclass(frozen=True, slots=True)
class ReadState:
    """One user's read position in one room, and what lies after it (GET /api/rooms).

    `unread` counts messages by others after `seq` among at most READ_WINDOW of them;
    `capped` says the window was full (show "999+"). `mentions` counts the unread ones that
    mention the user or @room, from the mention index, at most READ_WINDOW. `counted_seq` is
    the room's latest seq in the snapshot the counts were taken from."""

    seq: int = 0
    unread: int = 0
    mentions: int = 0
    capped: bool = False
    counted_seq: int = 0


READ_WINDOW = 1000  # messages after a read position that /api/rooms counts, per room


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message ready to store: text already validated, html already rendered off the loop."""

    room_id: int
    room: str
    user_id: int
    user: str
    text: str
    html: str
    stream: str | None = None
    aborted: bool = False
    file: StoredFile | None = None  # an upload (its row already stored) this message posts
    thread: int | None = None  # a reply: its root's seq, already checked (chatserver.threads)
    # Mentions (chatserver.mentions): existing users, by id and name, in order of first
    # appearance; `mentions_room` for "@room". Stored in the message's own transaction.
    mentions: tuple[Mention, ...] = ()
    mentions_room: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    room: str
    seq: int
    id: str
    user: str
    text: str
    html: str
    ts: str  # ISO 8601 UTC with milliseconds and a Z, e.g. 2026-11-22T10:00:00.123Z
    stream: str | None = None
    aborted: bool = False
    file: StoredFile | None = None
    # Current state after room events (docs/protocol.md §10): when last edited, whether
    # deleted (text and html are then ''), and the reactions in order of first use.
    edited: str | None = None
    deleted: bool = False
    reactions: tuple[Reaction, ...] = ()
    thread: int | None = None  # a reply: its root's seq
    # A root with replies, as history reads it: how many and the newest one's seq. None when
    # it has none, or when not read (a live message, a reply).
    replies: ThreadSummary | None = None
    mentions: tuple[str, ...] = ()  # the mentioned users' names (chatserver.mentions)
    mentions_room: bool = False


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread root's replies as history shows them (`replies`, `last_reply`)."""

    count: int
    last: int


@dataclass(frozen=True, slots=True)
class ThreadRoot:
    """What a reply's would-be root is: `thread` is its own root (a reply cannot be a root),
    `deleted` whether it was deleted (§10 "Edits and deletions")."""

    seq: int
    thread: int | None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Reaction:
    """One emoji's reactions to a message: `count` is exact, `users` the first
    `REACTION_USERS_MAX` by time of reacting."""

    emoji: str
    count: int
    users: tuple[str, ...]


REACTION_USERS_MAX = 20
RoomEventKind = Literal["edited", "deleted", "reaction"]


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """A stored change to a room other than a message, with the room's seq it took.

    `text`/`html` (edits only) are the message's text: on replay its current text, since the
    log keeps no copy of an edit's text (a deletion must erase every copy)."""

    room: str
    seq: int
    kind: RoomEventKind
    target: int  # the message's seq
    user: str  # who edited, deleted or reacted
    ts: str
    text: str = ""
    html: str = ""
    emoji: str = ""
    added: bool = False  # reactions: added (True) or removed


LogEntry = StoredMessage | RoomEvent  # one item of a room's log, in seq order


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of a store writer's group-commit counters (they only grow, but `pending`).

    Every backend exposes one as `Store.stats`; `/metrics` exports it."""

    batches: int = 0  # batches taken off the write queue
    transactions: int = 0  # batches committed: one transaction each
    jobs: int = 0  # writes taken off the queue, whatever became of them
    failed_batches: int = 0  # batches whose transaction failed: every write in it got an error
    retries: int = 0  # batches run again after a deadlock or serialization failure
    rejected: int = 0  # writes refused because the queue was full or closed
    largest_batch: int = 0
    pending: int = 0  # submitted and not yet resolved, the running batch included


@dataclass(eq=False, slots=True)
class WriterTimings:
    """A store writer's histograms, observed once per batch by the writer (live, not a
    snapshot); `/metrics` exports them."""

    commit_seconds: Buckets = field(default_factory=lambda: Buckets(COMMIT_BUCKETS))
    batch_size: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))


@dataclass(frozen=True, slots=True)
class RemovedMessages:
    """What one `Store.remove_messages_before` call removed: how many messages, and the ids
    of their files, whose rows went with them and whose bytes the caller removes."""

    count: int = 0
    file_ids: tuple[str, ...] = ()
    # The batch found `limit` messages to remove, so more may be left — even when another
    # instance removing at the same moment took them and `count` is lower: a caller stops on
    # `more`, not on `count`, or a collision would end its sweep early.
    more: bool = False


class Store(abc.ABC):
    """Persistent state. Open with `await open()`, close with `await close()`.

    `close()` first flushes every write already submitted (SIGTERM must lose nothing acked).
    """

    @property
    @abc.abstractmethod
    def stats(self) -> WriterStats:
        """The writer's group-commit counters (exported at /metrics)."""

    @property
    def timings(self) -> WriterTimings:
        """The writer's commit-latency and batch-size histograms (exported at /metrics);
        empty ones for a store that does not time its writes."""
        return WriterTimings()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply pending migrations, start the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes, then release every connection and thread."""

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied (may be empty)."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the backend answers a trivial query."""

    # -- users and tokens -------------------------------------------------------------------

    @abc.abstractmethod
    async def create_user(
        self, name: str, password_hash: str, *, is_admin: bool = False, is_bot: bool = False
    ) -> User:
        """Create a user; raise `Conflict` if the name is taken."""

    @abc.abstractmethod
    async def get_user(self, name: str) -> User | None: ...

    @abc.abstractmethod
    async def get_password_hash(self, name: str) -> tuple[User, str] | None: ...

    @abc.abstractmethod
    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...

    @abc.abstractmethod
    async def set_disabled(self, name: str, disabled: bool) -> User:
        """Raise `NotFound` for an unknown user."""

    @abc.abstractmethod
    async def count_users(self) -> int: ...

    @abc.abstractmethod
    async def list_users(self) -> list[UserListing]:
        """Every user, by name, with its live (unrevoked) tokens counted by kind."""

    @abc.abstractmethod
    async def add_token(self, user_id: int, token_hash: str, kind: TokenKind) -> None: ...

    @abc.abstractmethod
    async def token_info(self, token_hash: str) -> TokenInfo | None:
        """The token's user, or None when the token is unknown or revoked."""

    @abc.abstractmethod
    async def revoke_token(self, token_hash: str) -> None: ...

    @abc.abstractmethod
    async def revoke_user_tokens(self, user_id: int, kind: TokenKind | None = None) -> int:
        """Revoke every live token of the user, only those of `kind` when given; returns how
        many. Idempotent: revoked tokens stay revoked and are not counted again."""

    @abc.abstractmethod
    async def invalid_tokens(self, token_hashes: Sequence[str]) -> dict[str, TokenInvalid]:
        """Of `token_hashes`, those that no longer authenticate, each with why (a hash not
        stored at all is "revoked"); valid ones are left out. One read statement whatever the
        number of hashes: the credential sweep (chatserver.credentials) asks about the
        tokens of all of an instance's open connections at once."""

    # -- rooms ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_room(self, name: str, kind: RoomKind, created_by: int | None) -> Room:
        """Create a room, its creator (when given) its first member; `Conflict` if taken."""

    @abc.abstractmethod
    async def get_room(self, name: str) -> Room | None: ...

    @abc.abstractmethod
    async def direct_room(self, a: User, b: User) -> tuple[Room, bool]:
        """The one direct room of these two users, created on first use (idempotent), and
        whether this call created it (exactly one of any number of concurrent calls did)."""

    @abc.abstractmethod
    async def add_member(self, room_id: int, user_id: int) -> bool:
        """Idempotent: True when this call made the user a member, False if they were one."""

    @abc.abstractmethod
    async def is_member(self, room_id: int, user_id: int) -> bool: ...

    @abc.abstractmethod
    async def member_names(self, room_id: int) -> list[str]: ...

    @abc.abstractmethod
    async def rooms_of_user(self, user_id: int) -> list[str]:
        """Names of the rooms the user is a member of (any kind)."""

    @abc.abstractmethod
    async def rooms_visible_to(self, user_id: int) -> list[RoomListing]:
        """Every public room and every room the user is a member of, by name."""

    # -- incoming webhooks ------------------------------------------------------------------

    @abc.abstractmethod
    async def create_hook(
        self, room_id: int, bot_id: int, token_hash: str, created_by: int | None
    ) -> Hook:
        """Store a hook by its token's hash; `NotFound` for an unknown room or user,
        `Conflict` if the hash is taken."""

    @abc.abstractmethod
    async def hook_by_token(self, token_hash: str) -> Hook | None:
        """The live hook with this token hash; None when it is unknown or revoked."""

    @abc.abstractmethod
    async def list_hooks(self) -> list[Hook]:
        """Every hook, revoked ones included, by id."""

    @abc.abstractmethod
    async def revoke_hook(self, hook_id: int) -> Hook:
        """Revoke the hook (idempotent: a second revoke keeps the first time) and return it;
        `NotFound` for an unknown id."""

    # -- files (uploads; chatserver.files stores their bytes) ---------------------------------

    @abc.abstractmethod
    async def add_file(self, file: NewFile) -> StoredFile:
        """Record an upload; `NotFound` for an unknown room or user, `Conflict` if the id is
        taken. It stays unlinked (seq None) until `append_message` posts it."""

    @abc.abstractmethod
    async def get_file(self, file_id: str) -> StoredFile | None: ...

    @abc.abstractmethod
    async def set_file_thumbnail(
        self, file_id: str, state: ThumbnailState, thumbnail_type: str | None,
        content_type: str | None = None,
    ) -> StoredFile:
        """Record the thumbnail job's outcome (and, when given, the content type the bytes
        turned out to have); `NotFound` for an unknown id."""

    @abc.abstractmethod
    async def delete_file(self, file_id: str) -> None:
        """Forget the upload (idempotent); removing its bytes is the caller's job."""

    # -- messages ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def append_message(self, message: NewMessage) -> StoredMessage:
        """Store durably, group-committed with concurrent appends; see the module docstring."""

    @abc.abstractmethod
    async def messages_after(self, room_id: int, after: int, limit: int) -> list[StoredMessage]:
        """Messages with seq > after, ascending, at most `limit`."""

    @abc.abstractmethod
    async def messages_before(
        self, room_id: int, before: int | None, limit: int
    ) -> list[StoredMessage]:
        """The `limit` messages just below `before` (None: the latest), returned ascending."""

    @abc.abstractmethod
    async def latest_seq(self, room_id: int) -> int:
        """The room's highest stored seq; 0 for an empty room."""

    # -- mentions and read positions (chatserver/mentions.py, chatserver/reads.py) ---------

    @abc.abstractmethod
    async def user_ids(self, names: list[str]) -> dict[str, int]:
        """The ids of the users with these names (disabled ones too); unknown names left out."""

    @abc.abstractmethod
    async def set_read(self, user_id: int, room_id: int, seq: int) -> tuple[int, bool]:
        """Move the user's read position in the room forward to `seq`, clamped to the room's
        latest seq; a lower value changes nothing. Returns (the position now, whether it
        moved). Through the writer, like every write."""

    @abc.abstractmethod
    async def read_states(self, user_id: int) -> dict[int, ReadState]:
        """By room id, the user's ReadState in every room `rooms_visible_to` lists, in one
        query; bounded per room by READ_WINDOW whatever the room's size."""

    # -- threads (chatserver/threads.py; docs/protocol.md §10 "Threads") -------------------

    @abc.abstractmethod
    async def thread_root(self, room_id: int, seq: int) -> ThreadRoot | None:
        """The room's message `seq` as a would-be thread root; None when there is none."""

    @abc.abstractmethod
    async def thread_after(
        self, room_id: int, root: int, after: int, limit: int
    ) -> list[StoredMessage]:
        """The replies to `root` with seq > after, ascending, at most `limit`."""

    @abc.abstractmethod
    async def thread_before(
        self, room_id: int, root: int, before: int | None, limit: int
    ) -> list[StoredMessage]:
        """The `limit` replies to `root` just below `before` (None: the latest), ascending."""

    # -- room events (docs/protocol.md §10; store/sqlite_events.py, store/postgres_events.py)

    @abc.abstractmethod
    async def edit_message(
        self, room_id: int, target: int, actor: User, text: str, html: str
    ) -> RoomEvent:
        """Replace message `target`'s text and html and store the `edited` event with the
        room's next seq, in one durable transaction. `NotFound` for an unknown or deleted
        message, `Forbidden` unless `actor` wrote it or is an admin."""

    @abc.abstractmethod
    async def delete_message(
        self, room_id: int, target: int, actor: User
    ) -> tuple[RoomEvent, tuple[str, ...]]:
        """Erase message `target` (text and html overwritten with '', its reactions and its
        file's row removed) and store the `deleted` event with the room's next seq; return
        the event and the removed files' ids (their bytes are the caller's to remove).
        `NotFound` and `Forbidden` as for `edit_message`."""

    @abc.abstractmethod
    async def react(
        self, room_id: int, target: int, actor: User, emoji: str, add: bool
    ) -> RoomEvent | None:
        """Add (or remove) `actor`'s `emoji` reaction to message `target` and store the
        `reaction` event with the room's next seq; None, and nothing stored, when it already
        was (or was not) there. `NotFound` for an unknown or deleted message."""

    @abc.abstractmethod
    async def events_after(self, room_id: int, after: int, limit: int) -> list[RoomEvent]:
        """The room's events (not messages) with seq > after, ascending, at most `limit`; an
        edit's with the message's current text. Retention removes a message's events."""

    async def room_log_after(self, room_id: int, after: int, limit: int) -> list[LogEntry]:
        """The room's log after seq `after`: messages (as `messages_after` reads them, current
        state included) and events merged in seq order, at most `limit`. What join replay and
        gap recovery deliver, so nothing of the range may be missing.

        Three reads, not one snapshot: the room's latest seq first, then both pages, cut at
        that seq. A seq is visible only once every lower seq of the room committed (both
        backends allocate seqs under the room's write lock until commit), so everything up to
        it is in both later reads; what is above is left for the next call."""
        if limit <= 0:
            return []
        latest = await self.latest_seq(room_id)
        messages = await self.messages_after(room_id, after, limit)
        events = await self.events_after(room_id, after, limit)
        entries: list[LogEntry] = [*messages, *events]
        entries.sort(key=lambda entry: entry.seq)
        return [entry for entry in entries[:limit] if entry.seq <= latest]

    # -- search (chatserver/search.py; the engines in store/search_sqlite.py, search_postgres.py)

    @abc.abstractmethod
    async def search_messages(
        self,
        user_id: int,
        query: SearchQuery,
        *,
        room_id: int | None = None,
        after: Cursor | None = None,
        limit: int = 20,
    ) -> SearchPage:
        """One page of full-text hits over the rooms `user_id` may read now (public rooms and
        the rooms they are a member of; with `room_id`, that room only, and only if readable),
        best first: relevance, then newest, then room and seq (descending). `after` is the
        previous page's `next`: pages never repeat or skip a hit while the messages stay as
        they were. The permission check is part of the query, never a filter on a page. Runs
        on the read path. `BadRequest` when the query has no indexed word (PostgreSQL drops
        stop words such as 'the')."""

    # -- retention (chatserver.retention runs the job) ---------------------------------------

    @abc.abstractmethod
    async def set_retention(self, room_id: int, days: int) -> None:
        """Keep the room's messages for `days` days (0: forever); `NotFound` for an unknown
        room, `BadRequest` outside 0..36500."""

    @abc.abstractmethod
    async def rooms_with_retention(self) -> list[tuple[Room, int]]:
        """Every room whose retention is not forever, with its days, by id."""

    @abc.abstractmethod
    async def remove_messages_before(
        self, room_id: int, before_ms: int, limit: int
    ) -> RemovedMessages:
        """Remove the room's oldest messages stored before `before_ms` (epoch milliseconds),
        at most `limit` in one transaction, with their files' rows and search entries; return
        what this call removed.

        Removal stops at the room's oldest message still kept: a room's `ts` grows with its
        seq, so that leaves only messages whose clock stepped back across the cut-off, which a
        later call removes once its cut-off passes them. Idempotent and safe for several
        instances at once (a message or file already removed is not reported twice). The room's
        `latest_seq` does not change: removed seqs are never given out again.
        """


def format_ts(epoch_ms: int) -> str:
    """Milliseconds since the epoch as `2026-11-22T10:00:00.123Z`."""
    moment = _dt.datetime.fromtimestamp(epoch_ms / 1000, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


__all__ = [
    "MAX_RETENTION_DAYS",
    "Hook",
    "NewFile",
    "NewMessage",
    "REACTION_USERS_MAX",
    "Reaction",
    "RoomEvent",
    "RoomEventKind",
    "LogEntry",
    "RemovedMessages",
    "Room",
    "RoomKind",
    "RoomListing",
    "Store",
    "StoreUnavailable",
    "StoredFile",
    "StoredMessage",
    "Mention",
    "READ_WINDOW",
    "ReadState",
    "ThreadRoot",
    "ThreadSummary",
    "ThumbnailState",
    "TokenInfo",
    "TokenKind",
    "User",
    "WriterStats",
    "WriterTimings",
    "format_ts",
]
