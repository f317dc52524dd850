-- 0001: users, tokens, rooms, members, messages.
-- Times are epoch milliseconds (INTEGER). Flags are 0/1 INTEGERs.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    is_bot        INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- Only hashes: the store never sees a clear-text token.
CREATE TABLE tokens (
    hash       TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    kind       TEXT    NOT NULL CHECK (kind IN ('api', 'session')),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER NULL
);
CREATE INDEX tokens_user_id ON tokens(user_id);

-- last_seq is bumped in the same transaction as the message insert, so it is the seq
-- allocator (gap-free even with a second writer process) and the O(1) latest_seq.
-- direct_key = "<min user id>:<max user id>" makes direct_room idempotent under races.
CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    created_by INTEGER NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    direct_key TEXT    NULL UNIQUE
);

CREATE TABLE members (
    room_id   INTEGER NOT NULL REFERENCES rooms(id),
    user_id   INTEGER NOT NULL REFERENCES users(id),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user_id ON members(user_id);

-- Clustered on (room_id, seq): history pages are contiguous range scans of this key.
-- user_name is denormalised on purpose: a message shows the name it was sent under.
CREATE TABLE messages (
    room_id   INTEGER NOT NULL REFERENCES rooms(id),
    seq       INTEGER NOT NULL,
    id        TEXT    NOT NULL UNIQUE,
    user_id   INTEGER NOT NULL,
    user_name TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    html      TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    stream    TEXT    NULL,
    aborted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
