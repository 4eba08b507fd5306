-- Audit retention: archived segments of the audit log. Events `first_seq`..=`last_seq` left the
-- database for the file `file_name` (under `<data_dir>/audit-archive/`, JSON lines, SHA-256
-- `sha256`); the row is the anchor the rest of the chain continues from (`last_hash` is the
-- `prev_hash` of event `last_seq + 1`). `checkpoint` is the compact JWS (`typ`
-- `audit-checkpoint+jwt`) signing `last_seq`/`last_hash` and the segment's facts, the same one
-- its manifest file holds. Segments are contiguous and never overlap.
CREATE TABLE audit_segments (
    first_seq       INTEGER PRIMARY KEY NOT NULL,
    last_seq        INTEGER NOT NULL UNIQUE,
    first_prev_hash TEXT NOT NULL,
    last_hash       TEXT NOT NULL,
    count           INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    checkpoint      TEXT NOT NULL,
    archived_at     INTEGER NOT NULL
);
