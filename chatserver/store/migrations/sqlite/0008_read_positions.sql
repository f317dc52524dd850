-- 0008: mentions and read positions (docs/protocol.md §10, "Mentions and read positions").
--
-- message_mentions: one row per (message, mentioned user), written in the message's own
-- transaction; user_id 0 (never a user's id: ids start at 1) stands for "@room", so one index
-- finds both kinds for the unread counts: (user_id, room_id, seq) with user_id IN (me, 0).
-- ON DELETE CASCADE: retention's DELETE of a message removes its mentions with it.
CREATE TABLE message_mentions (
    room_id INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq, user_id),
    FOREIGN KEY (room_id, seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX message_mentions_user ON message_mentions (user_id, room_id, seq);

-- A user's read position per room: only moves forward (chatserver/reads.py).
CREATE TABLE read_positions (
    user_id INTEGER NOT NULL REFERENCES users(id),
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    seq     INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;
