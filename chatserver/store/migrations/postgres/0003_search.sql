-- 0003: full-text search (GET /api/search): a stored tsvector of messages.text and its GIN
-- index. Generated, so every INSERT and every UPDATE of the text (edits, and deletions that
-- erase it) re-indexes in the same statement, and a removed row takes its entry with it.
-- Stemmed English with stop words, like SQLite's porter tokenizer (store/search_postgres.py
-- queries with the same configuration). Adding the column rewrites the table once: on a large
-- database this migration takes a while (docs/search.md).

ALTER TABLE messages
    ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED;

CREATE INDEX messages_search ON messages USING gin (search);
