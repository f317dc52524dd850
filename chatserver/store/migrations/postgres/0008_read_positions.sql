-- 0008: mentions and read positions (docs/protocol.md §10, "Mentions and read positions"):
-- SQLite's twin. user_id 0 in message_mentions stands for "@room" (ids start at 1), so one
-- index serves both kinds of mention in the unread counts. The append batch inserts the rows
-- in its own statement (postgres_writer); ON DELETE CASCADE follows retention's deletes.
CREATE TABLE message_mentions (
    room_id bigint NOT NULL,
    seq     bigint NOT NULL,
    user_id bigint NOT NULL,
    PRIMARY KEY (room_id, seq, user_id),
    FOREIGN KEY (room_id, seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE
);
CREATE INDEX message_mentions_user ON message_mentions (user_id, room_id, seq);

CREATE TABLE read_positions (
    user_id bigint NOT NULL REFERENCES users(id),
    room_id bigint NOT NULL REFERENCES rooms(id),
    seq     bigint NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
