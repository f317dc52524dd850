-- 0006: room events (docs/protocol.md §10, "Room events"): edits, deletions, reactions.
--
-- An event takes the room's next seq from rooms.last_seq, like a message, in the writer's
-- transaction; `events` is the log of the ones that are not messages (a room's log is messages
-- and events merged by seq). An edit's text is not kept here: replay shows the message's
-- current text, so a deletion erases every copy by overwriting messages.text/html ('' also
-- empties its search entry through 0003's UPDATE trigger).
-- No foreign keys to messages: retention deletes a batch's events and reactions itself, by
-- range of target_seq in its own transaction (one scan of each index, where a cascade would
-- run one delete per removed message).

ALTER TABLE messages ADD COLUMN edited_at INTEGER NULL;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    room_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('edited', 'deleted', 'reaction')),
    target_seq INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    user_name  TEXT    NOT NULL,
    emoji      TEXT    NULL,
    added      INTEGER NOT NULL DEFAULT 0,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE INDEX events_target ON events (room_id, target_seq);

-- One row per (message, emoji, user); created_seq (the adding event's seq) orders emojis by
-- first use and users within one.
CREATE TABLE reactions (
    room_id     INTEGER NOT NULL,
    target_seq  INTEGER NOT NULL,
    emoji       TEXT    NOT NULL,
    user_id     INTEGER NOT NULL,
    user_name   TEXT    NOT NULL,
    created_seq INTEGER NOT NULL,
    PRIMARY KEY (room_id, target_seq, emoji, user_id)
) WITHOUT ROWID;
