-- 0003: full-text search (GET /api/search): an FTS5 index over messages.text.
--
-- External content: the index keeps no copy of the text; snippet() reads it back through the
-- view below. messages is WITHOUT ROWID, so each message's FTS rowid ("doc") is computed from
-- its key: (room_id << 36) + seq (seqs below 2^36, room ids below 2^27); the expression index
-- lets the view find a message by doc. Triggers keep the index in step with every INSERT,
-- UPDATE of the text (edits, and deletions that erase it) and DELETE (retention), in the
-- writer's own transaction. Control characters 1 and 2 become spaces in what is indexed and
-- shown: they mark matches in snippets (chatserver/search.py), so the text cannot forge one.
-- Stemmed English (porter) like PostgreSQL's 'english' configuration.

CREATE INDEX messages_search_doc ON messages (((room_id << 36) + seq));

CREATE VIEW message_search_docs AS
SELECT (room_id << 36) + seq AS doc, replace(replace(text, char(1), ' '), char(2), ' ') AS text
FROM messages;

CREATE VIRTUAL TABLE message_search USING fts5(
    text,
    content = 'message_search_docs',
    content_rowid = 'doc',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (rowid, text)
    VALUES ((new.room_id << 36) + new.seq,
            replace(replace(new.text, char(1), ' '), char(2), ' '));
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF room_id, seq, text ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, text)
    VALUES ('delete', (old.room_id << 36) + old.seq,
            replace(replace(old.text, char(1), ' '), char(2), ' '));
    INSERT INTO message_search (rowid, text)
    VALUES ((new.room_id << 36) + new.seq,
            replace(replace(new.text, char(1), ' '), char(2), ' '));
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, text)
    VALUES ('delete', (old.room_id << 36) + old.seq,
            replace(replace(old.text, char(1), ' '), char(2), ' '));
END;

-- Messages stored before this migration.
INSERT INTO message_search (message_search) VALUES ('rebuild');
