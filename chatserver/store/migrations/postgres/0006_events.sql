-- 0006: room events (docs/protocol.md §10, "Room events"): SQLite's twin.
--
-- An event takes the room's next seq from rooms.last_seq under the room row's lock, like the
-- append batch; `events` is the log of the ones that are not messages. An edit's text is not
-- kept here: replay shows the message's current text, so a deletion erases every copy by
-- overwriting messages.text/html ('' also empties the generated search column of 0003).
-- No foreign keys to messages: retention deletes a batch's events and reactions in its own
-- statement, after their messages (set-based; a cascade would run one delete per message and
-- make concurrent retention runs overlap for longer).
-- Constant defaults add the columns without rewriting messages.

ALTER TABLE messages ADD COLUMN edited_at bigint NULL;
ALTER TABLE messages ADD COLUMN deleted boolean NOT NULL DEFAULT false;

CREATE TABLE events (
    room_id    bigint  NOT NULL,
    seq        bigint  NOT NULL,
    kind       text    NOT NULL CHECK (kind IN ('edited', 'deleted', 'reaction')),
    target_seq bigint  NOT NULL,
    user_id    bigint  NOT NULL,
    user_name  text    NOT NULL,
    emoji      text    NULL,
    added      boolean NOT NULL DEFAULT false,
    ts         bigint  NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE INDEX events_target ON events (room_id, target_seq);

-- One row per (message, emoji, user); created_seq orders emojis by first use.
CREATE TABLE reactions (
    room_id     bigint NOT NULL,
    target_seq  bigint NOT NULL,
    emoji       text   NOT NULL,
    user_id     bigint NOT NULL,
    user_name   text   NOT NULL,
    created_seq bigint NOT NULL,
    PRIMARY KEY (room_id, target_seq, emoji, user_id)
);
