-- 0005: per-room retention (`chatserver room retention ROOM DAYS`); 0 keeps messages forever.
-- No index on messages.ts: a room's ts grows with its seq, so the retention job walks the
-- oldest rows by the primary key (room_id, seq) and stops at the first one still kept.

ALTER TABLE rooms ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 0
    CHECK (retention_days BETWEEN 0 AND 36500);
