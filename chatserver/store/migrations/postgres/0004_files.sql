-- 0004: uploaded files (POST /api/rooms/{room}/files): SQLite's twin. The bytes live on disk
-- under [files] dir, named by `id` (random, never the client's name); `name` is metadata only.
-- `seq` is the message that posted the file, written by the append batch's own statement, so
-- history sees a message and its file together. No foreign key to messages: retention and
-- deletions remove messages, and their files' rows and bytes go with them (chatserver.files).

CREATE TABLE files (
    id             text   PRIMARY KEY,
    room_id        bigint NOT NULL REFERENCES rooms(id),
    uploader_id    bigint NOT NULL REFERENCES users(id),
    uploader_name  text   NOT NULL,
    name           text   NOT NULL,
    size           bigint NOT NULL,
    content_type   text   NOT NULL,
    sha256         text   NOT NULL,
    created_at     bigint NOT NULL,
    thumbnail      text   NOT NULL DEFAULT 'none'
                   CHECK (thumbnail IN ('none', 'pending', 'ready', 'failed')),
    thumbnail_type text   NULL,
    seq            bigint NULL
);
-- History attaches files to a page of messages by this key; one file per message.
CREATE UNIQUE INDEX files_message ON files(room_id, seq) WHERE seq IS NOT NULL;
