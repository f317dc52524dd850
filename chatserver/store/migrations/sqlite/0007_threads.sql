-- 0007: threads (docs/protocol.md §10, "Threads"). A reply's `thread` is its root's seq in the
-- same room; NULL for a top-level message. No foreign key: retention removes a root before its
-- (younger) replies, and those replies stay.
-- The index serves both thread reads: a thread's replies paged by seq, and the reply count and
-- last reply of a page's roots (one grouped lookup per page, never one query per row).

ALTER TABLE messages ADD COLUMN thread INTEGER NULL;
CREATE INDEX messages_thread ON messages (room_id, thread, seq) WHERE thread IS NOT NULL;
