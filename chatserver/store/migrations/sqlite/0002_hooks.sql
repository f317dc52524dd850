-- 0002: incoming webhooks (`chatserver hook create ROOM`, `POST /hooks/{token}`).
-- Like tokens, only the token's SHA-256 is kept: the URL is shown once, at creation.
-- A hook is revoked, never deleted, so `hook list` keeps its history.

CREATE TABLE hooks (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT    NOT NULL UNIQUE,
    room_id    INTEGER NOT NULL REFERENCES rooms(id),
    bot_id     INTEGER NOT NULL REFERENCES users(id),
    created_by INTEGER NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER NULL
);
