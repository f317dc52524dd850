-- 0004: uploaded files (POST /api/rooms/{room}/files). The bytes live on disk under
-- [files] dir, named by `id` (random, never the client's name); `name` is metadata only.
-- `seq` is the message that posted the file: written in that message's own transaction, so
-- history sees a message and its file together. No foreign key to messages: retention and
-- deletions remove messages, and their files' rows and bytes go with them (chatserver.files).
-- thumbnail: 'none' (not an image), 'pending', 'ready' (thumbnail_type says PNG or JPEG),
-- 'failed' (undecodable, or over the pixel cap: then served as a download).

CREATE TABLE files (
    id             TEXT    PRIMARY KEY,
    room_id        INTEGER NOT NULL REFERENCES rooms(id),
    uploader_id    INTEGER NOT NULL REFERENCES users(id),
    uploader_name  TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    content_type   TEXT    NOT NULL,
    sha256         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    thumbnail      TEXT    NOT NULL DEFAULT 'none'
                   CHECK (thumbnail IN ('none', 'pending', 'ready', 'failed')),
    thumbnail_type TEXT    NULL,
    seq            INTEGER NULL
) WITHOUT ROWID;
-- History attaches files to a page of messages by this key; one file per message.
CREATE UNIQUE INDEX files_message ON files(room_id, seq) WHERE seq IS NOT NULL;
